"""Cohort-level scoring: DigiLut F2, AP, FROC and patch metrics, written for people to read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from histodetect.annotations.formats import EXCLUDE, ImportSettings
from histodetect.annotations.lesions import (
    clip_to_slide,
    read_cohort_annotations,
)
from histodetect.columns import class_prob_column
from histodetect.detection.boxes import boxes_to_digilut
from histodetect.detection.slide_score import SLIDE_COLUMNS, SlideScore
from histodetect.evaluation.detection_metrics import detection_report, patch_metrics
from histodetect.evaluation.plots import froc_png, roc_png
from histodetect.fit.metrics import (
    at_decision,
    binary_auc,
    metric_key,
    multiclass_metrics,
)
from histodetect.io import atomic_path
from histodetect.training.thresholds import Decision


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def slide_truth(
    sheet: pd.DataFrame,
    digilut_csv: str | Path | None,
    settings: dict[str, Any],
    tile_summaries: Sequence[str | Path],
    *,
    box_index: str | Path | None = None,
) -> pd.DataFrame:
    """Ground truth ``slide_id,x1,y1,x2,y2,class_name,geometry`` of the slides of
    ``tile_summaries``.

    Each lesion annotation (DigiLut CSV row, or its ``box_index`` row, or per-slide file of
    the sheet) gives its bounding box, its class and its outline (a shapely polygon: the
    Camelyon16 FROC grows it); excluded regions are left out. Outlines over a slide's edge
    are clipped to it as they were for labelling (:func:`clip_to_slide`).
    """
    records = [json.loads(Path(p).read_text()) for p in tile_summaries]  # each read once
    mpps = {str(r["slide_id"]): float(r["mpp"]) for r in records}
    chosen = ImportSettings(**settings)
    ann = read_cohort_annotations(
        sheet, digilut_csv, chosen, slides=list(mpps), mpps=mpps, box_index=box_index
    )
    sizes = {
        str(r["slide_id"]): (float(r["width"]), float(r["height"])) for r in records if "width" in r
    }
    sized = ann.slide_id.astype(str).isin(sizes).to_numpy()
    if sized.any():
        wh = np.array([sizes[str(s)] for s in ann.slide_id[sized]])
        edged = clip_to_slide(ann[sized], wh[:, 0], wh[:, 1], tolerance=chosen.edge_tolerance)
        ann = pd.concat([edged, ann[~sized]])
    ann = ann[ann.class_name != EXCLUDE]
    b = shapely.bounds(np.asarray(ann.geometry, dtype=object)).reshape(-1, 4)
    return pd.DataFrame(
        {"slide_id": ann.slide_id.astype(str).to_numpy(), "x1": b[:, 0], "y1": b[:, 1],
         "x2": b[:, 2], "y2": b[:, 3], "class_name": ann.class_name.astype(str).to_numpy(),
         "geometry": np.asarray(ann.geometry, dtype=object)}
    )  # fmt: skip


def rule_truth(inputs: Any, settings: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sample sheet and :func:`slide_truth` of a rule's ``inputs`` (``sheet``,
    ``annotations``, ``summaries``): what rules evaluate and tune_boxes score against."""
    sheet = pd.read_csv(inputs.sheet, sep="\t", dtype=str)
    return sheet, slide_truth(sheet, inputs.annotations, settings, inputs.summaries)


def evaluate_cohort(
    *,
    box_paths: Sequence[str],
    score_paths: Sequence[str],
    label_paths: Sequence[str],
    truth: pd.DataFrame,
    sheet: pd.DataFrame,
    giou: float,
    beta: float,
    outputs: Any,
    slide_score: SlideScore | None = None,
    tuning: dict[str, Any] | None = None,
    mpps: dict[str, float] | None = None,
    froc_rule: str = "camelyon16",
    classes: Sequence[str] | None = None,
    decision: Decision | None = None,
) -> dict[str, Any]:
    """Score the test slides and write metrics JSON/TSV, the submission CSV and plots.

    ``outputs`` has attributes ``metrics``, ``per_slide``, ``table``, ``submission``, ``froc``,
    ``roc`` and ``slides`` (Snakemake's output object or any namespace). ``tuning`` is the
    out-of-fold tuning record, if any: its ``oof_mean_f2`` is reported beside ``mean_f2`` and
    its slide score replaces ``slide_score``. ``mpps`` (level-0 um/px per slide) serves the
    camelyon16 ``froc_rule``. With ``classes`` (``labels.classes``: tile labels 1, 2, ... are
    those classes) the tile metrics are lesion vs rest (``patch``) and per class
    (``patch_by_class``, see :func:`class_tile_metrics`). Tile metrics that depend on a
    decision are given at 0.5 (``f1_at_0.5``; ``_at_argmax`` for ``patch_multiclass``) and,
    with the ensemble's out-of-fold ``decision`` (``results/models/threshold.json``), at it
    (``f1_at_oof_threshold`` for a binary model, ``patch_multiclass`` ``_at_oof_priors``).
    """
    pred = pd.concat(
        [pd.read_csv(p, dtype={"slide_id": str}) for p in box_paths], ignore_index=True
    )
    slides = [Path(p).stem for p in box_paths]
    per_slide, summary = detection_report(
        pred, truth, slides, beta=beta, thr=giou, froc_rule=froc_rule, mpps=mpps
    )
    scores = pd.concat([pd.read_parquet(p) for p in score_paths], ignore_index=True)
    labels = pd.concat([pd.read_parquet(p) for p in label_paths], ignore_index=True)
    tiles = scores.merge(labels[["slide_id", "x", "y", "label"]], on=["slide_id", "x", "y"])
    tiles = tiles[tiles.label >= 0]
    lesion = (tiles.label > 0).astype(np.int64)
    summary["patch"] = lesion_tile_metrics(lesion, tiles.prob, decision)
    if classes:
        summary["patch_by_class"], multiclass = class_tile_metrics(tiles, classes)
        if multiclass is not None:
            summary["patch_multiclass"] = multiclass
            if decision is not None and decision.multiclass:
                summary["patch_multiclass"] |= oof_class_metrics(tiles, decision)
    fps, sens = summary.pop("froc_fps"), summary.pop("froc_sens")
    if tuning is not None:
        slide_score = SlideScore.from_dict(tuning["slide_score"])
    slide_table = slide_answers(scores, pred, truth, slides, slide_score or SlideScore())
    summary["slide_auc"] = binary_auc(slide_table["has_lesion"], slide_table["slide_score"])
    summary["oof_mean_f2"] = None if tuning is None else tuning["oof_mean_f2"]
    summary["box_settings"] = None if tuning is None else tuning["settings"]
    with atomic_path(outputs.slides) as tmp:
        slide_table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")

    with atomic_path(outputs.metrics) as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2))
    with atomic_path(outputs.per_slide) as tmp:
        per_slide.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    with atomic_path(outputs.table) as tmp:
        metrics_table(summary).to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    filenames = dict(zip(sheet.slide_id, (Path(p).name for p in sheet.path), strict=True))
    submission = pd.concat(
        [boxes_to_digilut(g, filenames[s]) for s, g in pred.groupby("slide_id")]
        or [boxes_to_digilut(pred, "")],
        ignore_index=True,
    )
    with atomic_path(outputs.submission) as tmp:
        submission.to_csv(tmp, index=False)
    froc_png(fps, sens, outputs.froc)
    roc_png(lesion, tiles.prob, outputs.roc)
    return summary


def lesion_tile_metrics(
    lesion: pd.Series, prob: pd.Series, decision: Decision | None = None
) -> dict[str, Any]:
    """Lesion against background: ``auc``, ``n``, ``n_pos`` and the others ``_at_0.5``, also
    ``_at_oof_threshold`` (with ``oof_threshold``) for a binary out-of-fold ``decision``."""
    plain = patch_metrics(lesion, prob)
    fixed = ("auc", "n", "n_pos")
    out = {k: plain[k] for k in fixed} | at_decision(_decided(plain, fixed), "0.5")
    if decision is None or decision.multiclass:
        return out
    tuned = _decided(patch_metrics(lesion, prob, float(decision.threshold)), fixed)
    return out | at_decision(tuned, decision.name) | decision.summary()


def oof_class_metrics(tiles: pd.DataFrame, decision: Decision) -> dict[str, float]:
    """Weighted multi-class tile metrics at the out-of-fold class priors (``_at_oof_priors``).

    The priors belong to the model's classes (``decision.classes``, in order), whose
    ``prob_<class>`` columns the scores hold.
    """
    columns = [class_prob_column(c) for c in decision.classes]
    if not set(columns) <= set(tiles.columns):
        raise ValueError(f"tile scores lack {columns}: not this decision's model")
    probs = tiles[columns].to_numpy(np.float64)
    label = tiles.label.to_numpy(np.int64)
    scores = multiclass_metrics(label, probs, decision.classes, np.asarray(decision.priors))
    weighted = ("f1", "precision", "recall", "accuracy", "balanced_accuracy")
    return {f"{m}_at_{decision.name}": scores[m] for m in weighted} | decision.summary()


def _decided(metrics: dict[str, Any], fixed: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in fixed}


def class_tile_metrics(
    tiles: pd.DataFrame, classes: Sequence[str], threshold: float = 0.5
) -> tuple[dict[str, dict[str, float]], dict[str, float] | None]:
    """Tile metrics of each lesion class (label ``k`` is ``classes[k - 1]``, 0 background).

    Per class: ``n`` tiles, and how the lesion probability ``prob`` treats them:
    ``lesion_recall`` (share at or above ``threshold``) and ``lesion_auc`` (the class's tiles
    against background tiles). When the scores hold each class's probability (``prob_<class>``
    columns, written for multi-class models) also the class's one-vs-rest ``auc`` and, for the
    most probable class, ``f1``, ``precision`` and ``recall``; the second value is then the
    weighted multi-class summary (:func:`multiclass_metrics`: ``auc``, the others of the most
    probable class named ``_at_argmax``), else None.
    """
    label = tiles.label.to_numpy(np.int64)
    prob = tiles.prob.to_numpy(np.float64)
    names = ["background", *classes]
    columns = [class_prob_column(c) for c in names]
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(classes, start=1):
        mine = label == k
        versus = mine | (label == 0)
        out[name] = {
            "n": int(mine.sum()),
            "lesion_recall": float((prob[mine] >= threshold).mean())
            if mine.any()
            else float("nan"),
            "lesion_auc": binary_auc(mine[versus], prob[versus]),
        }
    if not set(columns) <= set(tiles.columns) or not len(tiles):
        return out, None
    scores = multiclass_metrics(label, tiles[columns].to_numpy(np.float64), names)
    for name in classes:
        key = metric_key(name)
        out[name] |= {m: scores[f"{m}_{key}"] for m in ("auc", "f1", "precision", "recall")}
    weighted = ("f1", "precision", "recall", "accuracy", "balanced_accuracy")
    return out, {"auc": scores["auc"]} | {f"{m}_at_argmax": scores[m] for m in weighted}


def slide_answers(
    scores: pd.DataFrame,
    boxes: pd.DataFrame,
    truth: pd.DataFrame,
    slides: Sequence[str],
    how: SlideScore,
) -> pd.DataFrame:
    """Per slide: its score, the lesion call at ``how.threshold``, boxes found and true."""
    rows = []
    for slide in slides:
        probs = scores.loc[scores.slide_id == slide, "prob"].to_numpy()
        score = how.score(probs)
        n_true = int((truth.slide_id == slide).sum())
        rows.append(
            {"slide_id": slide, "slide_score": score, "lesion": "yes" if how.positive(score) else "no",
             "n_boxes": int((boxes.slide_id == slide).sum()), "n_true": n_true,
             "has_lesion": int(n_true > 0)}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=[*SLIDE_COLUMNS, "n_true", "has_lesion"])


def metrics_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per metric: the detection scores, FROC points and patch metrics."""
    rows = [
        (k, summary[k])
        for k in (
            "n_slides",
            "mean_f2",
            "oof_mean_f2",
            "precision",
            "recall",
            "ap50",
            "froc_mean",
            "froc_lesions",
            "froc_itc",
            "slide_auc",
        )
        if k in summary
    ]
    rows += [(f"froc@{k}", v) for k, v in summary["froc"].items()]
    rows += [(f"patch_{k}", v) for k, v in summary["patch"].items()]
    for name, values in summary.get("by_class", {}).items():
        rows += [(f"{k}_{metric_key(name)}", v) for k, v in values.items()]
    rows += [(f"patch_multiclass_{k}", v) for k, v in summary.get("patch_multiclass", {}).items()]
    for name, values in summary.get("patch_by_class", {}).items():
        rows += [(f"patch_{k}_{metric_key(name)}", v) for k, v in values.items()]
    return pd.DataFrame(rows, columns=["metric", "value"])


def summarise_folds(paths: Sequence[str]) -> pd.DataFrame:
    """Per-fold validation metrics (each fold's ``metrics.json``) with mean and std rows.

    Decision-dependent metrics keep their names: ``patch_<metric>_at_0.5`` (``_at_argmax`` for
    multi-class) and ``patch_<metric>_at_oof_threshold`` (``_at_oof_priors``), with the decision
    itself (``oof_threshold`` or ``oof_prior_<class>``), as
    :func:`~histodetect.training.thresholds.write_threshold` wrote them.
    """
    rows = []
    for p in paths:
        m = json.loads(Path(p).read_text())
        flat = {k: v for k, v in m.items() if isinstance(v, int | float)}
        rows.append({"fold": Path(p).parent.name, **flat})
    table = pd.DataFrame(rows)
    numeric = table.drop(columns="fold")
    stats = pd.DataFrame([{"fold": "mean", **numeric.mean()}, {"fold": "std", **numeric.std()}])
    return pd.concat([table, stats], ignore_index=True)


def read_training_curves(tb_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Per-epoch scalars of each fold from its TensorBoard folder.

    Returns:
        Columns ``fold`` (the folder name, e.g. ``fold_0``), ``tag`` (``train_loss``,
        ``val_loss``, ``val_auc``, ``lr``), ``epoch`` and ``value``; the last value written
        for a step wins (a resumed run rewrites its epochs).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    for tb_dir in tb_dirs:
        acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0}).Reload()
        for tag in acc.Tags()["scalars"]:
            rows += [(Path(tb_dir).name, tag, e.step, e.value) for e in acc.Scalars(tag)]
    table = pd.DataFrame(rows, columns=["fold", "tag", "epoch", "value"])
    table = table.drop_duplicates(["fold", "tag", "epoch"], keep="last")
    return table.sort_values(["fold", "tag", "epoch"], ignore_index=True)
