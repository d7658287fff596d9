"""Slide-label models on new slides (target ``predict`` with ``mil.enabled``).

The bags of a prediction sheet are formed as in training (``mil.bag``: slide, patient or a
sheet column); no label is read. A slide whose tiling or feature extraction failed is left
out of its bag (``split`` ``excluded`` with its ``error`` in the bag table), and a bag with no
slide left is left out whole. Each bag goes through the fold ensemble as the training run's
test bags do (:func:`~histodetect.mil.ensemble.ensemble_call`), called at the out-of-fold
decision the training run saved beside its models (``decision.json``). A numeric outcome has
no decision: each bag gets the fold models' mean (``prediction``; survival: ``risk``, the log
risk, and its ``risk_group`` by the cut points fixed out of fold and saved in
``decision.json``) and their spread ``fold_sd`` (:func:`predict_outcomes`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histodetect.cohort.bags import predict_bag_ids
from histodetect.errors import InputError
from histodetect.features.store import read_attrs
from histodetect.io import atomic_path
from histodetect.mil.data import Bag, FeatureSource, bags_of
from histodetect.mil.ensemble import BagScorer, ensemble_call, fold_vote
from histodetect.mil.models import BagModel, MilTask, load_mil_model, score_bag
from histodetect.mil.survival_metrics import risk_groups
from histodetect.mil.tile_models import tile_model_kind
from histodetect.mil.train_concat import load_concat_model
from histodetect.mil.train_topk import load_topk_model
from histodetect.training.thresholds import Decision

LoadedModel = tuple[BagModel, MilTask, dict[str, Any]]


def predict_bag_table(
    sheet: pd.DataFrame,
    bag: str,
    tiling: pd.DataFrame,
    feature_paths: Mapping[str, str | Path],
    source: str,
) -> pd.DataFrame:
    """One row per slide of the prediction sheet, in the fold table's layout (``slide_id,
    patient_id, bag_id, group, label, y, split, fold``) plus ``error``: ``split`` is
    ``predict``, or ``excluded`` for a slide whose tiling (``tiling``: the predict tiling
    summary) or features (``feature_paths``: the file of each slide that tiled) failed.

    Raises :class:`InputError` naming ``source`` when the sheet lacks the bag's column or a
    slide's bag id is empty.
    """
    bags = predict_bag_ids(sheet, bag, source)
    patients = sheet["patient_id"] if "patient_id" in sheet else sheet["slide_id"]
    patients = patients.fillna("").astype(str).where(lambda p: p != "", sheet["slide_id"])
    status = tiling.set_index(tiling.slide_id.astype(str))
    errors = []
    for slide in sheet.slide_id.astype(str):
        if slide not in status.index or slide not in feature_paths:
            row = status.loc[slide] if slide in status.index else None
            cause = "not tiled" if row is None else _tiling_cause(row)
            errors.append(f"tiling: {cause}")
            continue
        attrs = read_attrs(feature_paths[slide])
        errors.append("" if attrs.get("status") == "ok" else f"features: {attrs.get('error')}")
    table = pd.DataFrame(
        {
            "slide_id": sheet.slide_id.astype(str).to_numpy(),
            "patient_id": patients.to_numpy(),
            "bag_id": bags.to_numpy(),
            "label": "",
            "y": -1,
            "error": errors,
        }
    )
    table["group"] = table.bag_id
    table["split"] = ["predict" if not e else "excluded" for e in errors]
    table["fold"] = -1
    return table[[*table.columns.drop("error"), "error"]]


def _tiling_cause(row: pd.Series) -> str:
    if row.status == "failed":
        return str(row.error)
    return "no tissue tiles" if row.status != "ok" else "no feature file"


def load_ensemble(
    model_paths: Sequence[str | Path], decision_path: str | Path, encoder_id: str
) -> tuple[list[LoadedModel], Decision | dict[str, Any]]:
    """The fold models and their decision, checked to fit each other and the features; a
    numeric outcome's (``task`` regression or survival) decision record instead of a
    :class:`Decision`: its task, and survival's ``risk_groups``.

    Raises :class:`InputError` naming a model trained on features of another encoder id than
    ``encoder_id`` (both ids given), a model of other classes or another task than the
    decision's, a decision file that is not one, or a survival record without its groups.
    """
    try:
        record = json.loads(Path(decision_path).read_text())
    except (OSError, ValueError):
        record = None  # Decision.read says what is wrong with it
    outcome = isinstance(record, dict) and record.get("task") in ("regression", "survival")
    if outcome and record["task"] == "survival" and "risk_groups" not in record:
        raise InputError(
            decision_path,
            "a survival decision record without risk_groups (made before predict of survival "
            "was built): run target mil of that run again",
        )
    decision: Decision | dict[str, Any] = record if outcome else Decision.read(decision_path)
    loaded = [load_fold_model(p) for p in model_paths]
    for path, (_, _, meta) in zip(model_paths, loaded, strict=True):
        trained_on = meta.get("encoder_id")
        if trained_on != encoder_id:
            raise InputError(
                path,
                f"trained on features {trained_on} but the features of the new slides are "
                f"{encoder_id}: set the features section as in the models' run",
            )
        if outcome and meta.get("task") != record["task"]:
            raise InputError(
                path, f"task {meta.get('task')} differs from {decision_path}'s {record['task']}"
            )
        if not outcome and [str(c) for c in meta["classes"]] != [
            str(c)
            for c in decision.classes  # type: ignore[union-attr]
        ]:
            raise InputError(
                path,
                f"classes {meta['classes']} differ from {decision_path}'s {decision.classes}",  # type: ignore[union-attr]
            )
    return loaded, decision


def load_fold_model(path: str | Path) -> LoadedModel:
    """A fold model of any family (bag model, summary image, top-k tiles), with task and meta."""
    kind = tile_model_kind(path)
    if kind == "concat":
        return load_concat_model(path)  # type: ignore[return-value]
    return load_topk_model(path) if kind == "topk" else load_mil_model(path)  # type: ignore[return-value]


def predict_bags(
    bag_table: pd.DataFrame,
    loaded: Sequence[LoadedModel],
    decision: Decision | dict[str, Any],
    source: FeatureSource,
    scorer: BagScorer | None = None,
) -> pd.DataFrame:
    """Per bag with a slide left: ``bag_id, slides, n_slides, n_tiles, prob_<class>...,
    call, fold_agreement, slides_left_out`` (the bag's slides that failed, comma-separated);
    ``scorer``: the fold models of a family that reads tiles (``loaded``'s then serve only
    for their checks), else the bag models score the bags' features. A numeric outcome's
    record (``decision`` a dict): :func:`predict_outcomes`."""
    if isinstance(decision, dict):
        return predict_outcomes(bag_table, loaded, decision, source)
    classes = list(decision.classes)
    used = bag_table[bag_table.split == "predict"]
    left_out = _left_out_slides(bag_table)
    rows = []
    for bag in bags_of(used):
        if scorer is not None:
            per_fold, n_tiles = scorer.score(bag)
            mean, call, agree = fold_vote(per_fold, decision)
        else:
            x = source.bag(bag)
            mean, call, agree = ensemble_call(loaded, decision, x)
            n_tiles = len(x)
        rows.append(_row(bag, classes, mean, call, agree, n_tiles, left_out.get(bag.bag_id, "")))
    columns = ["bag_id", "slides", "n_slides", "n_tiles", *[f"prob_{c}" for c in classes]]
    return pd.DataFrame(rows, columns=[*columns, "call", "fold_agreement", "slides_left_out"])


def predict_outcomes(
    bag_table: pd.DataFrame,
    loaded: Sequence[LoadedModel],
    record: dict[str, Any],
    source: FeatureSource,
) -> pd.DataFrame:
    """Per bag with a slide left, by the fold bag models over its features: ``bag_id,
    slides, n_slides, n_tiles``, the models' mean (regression: ``prediction``, the number;
    survival: ``risk``, the log risk, and ``risk_group`` at ``record["risk_groups"]``'s cut
    points, fixed out of fold in training), ``fold_sd`` (their spread) and
    ``slides_left_out``; the same numbers the training run's test bags got."""
    survival = record["task"] == "survival"
    column = "risk" if survival else "prediction"
    used = bag_table[bag_table.split == "predict"]
    left_out = _left_out_slides(bag_table)
    rows = []
    for bag in bags_of(used):
        x = source.bag(bag)
        values = np.array([score_bag(model, task, x)[0][0] for model, task, _ in loaded], float)
        rows.append({"bag_id": bag.bag_id, "slides": ",".join(bag.slide_ids),
                     "n_slides": len(bag.slide_ids), "n_tiles": len(x),
                     column: float(values.mean()), "fold_sd": float(values.std()),
                     "slides_left_out": left_out.get(bag.bag_id, "")})  # fmt: skip
    columns = ["bag_id", "slides", "n_slides", "n_tiles", column, "fold_sd", "slides_left_out"]
    table = pd.DataFrame(rows, columns=columns)
    if survival:
        table.insert(5, "risk_group", risk_groups(table.risk, record["risk_groups"]["cuts"]))
    return table


def _left_out_slides(bag_table: pd.DataFrame) -> pd.Series:
    excluded = bag_table[bag_table.split == "excluded"]
    return excluded.groupby("bag_id").slide_id.agg(",".join)


def _row(
    bag: Bag, classes: list[str], mean: Any, call: int, agree: float, n_tiles: int, left: str
) -> dict[str, Any]:
    probs = {f"prob_{c}": float(p) for c, p in zip(classes, mean, strict=True)}
    return {"bag_id": bag.bag_id, "slides": ",".join(bag.slide_ids),
            "n_slides": len(bag.slide_ids), "n_tiles": n_tiles, **probs, "call": classes[call],
            "fold_agreement": agree, "slides_left_out": left}  # fmt: skip


def left_out_bags(bag_table: pd.DataFrame) -> list[str]:
    """Bags none of whose slides tiled and extracted."""
    usable = bag_table.groupby("bag_id", sort=False).split.agg(lambda s: (s == "predict").any())
    return list(usable.index[~usable])


def write_predictions(table: pd.DataFrame, bag_table: pd.DataFrame, tsv: Path, bags: Path) -> None:
    """``predictions.tsv`` and the bag table (``bags.tsv``), each renamed only once complete."""
    with atomic_path(bags) as tmp:
        bag_table.to_csv(tmp, sep="\t", index=False)
    with atomic_path(tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
