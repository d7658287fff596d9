"""Slide and patient labels for weakly supervised (MIL) models: checks, bags, split and folds.

A bag is what one label belongs to: a slide (``mil.bag: slide``), all slides of a patient
(``patient``) or of a sheet column's value (a biopsy id, say). Bags and patients are tied
together into groups (a bag holding two patients joins them, a patient holding two bags
joins those), and a group lands wholly on one side of the train/test split and in one fold:
checked here in code, on every fold table a model is trained from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histodetect.cohort.splits import assert_patients_disjoint, split_patients
from histodetect.errors import InputError, SplitError, name_some

CLASS_TASKS = ("binary", "multiclass", "ordinal")
OUTCOME_TASKS = ("regression", "survival")
"""Tasks whose label is a number, not a class: ``y`` is then the label's quartile (the
stratum of the split and the folds) and ``target`` the number; survival's label is
``time:event`` (the sheet's ``mil.time_column`` and ``mil.event_column``), ``target`` the
time, ``event`` 1 (the event seen) or 0 (censored), and ``y`` the event."""
TASKS = CLASS_TASKS + OUTCOME_TASKS
BAG_COLUMNS = ["slide_id", "patient_id", "bag_id", "group", "label", "y"]
STRATA = 4
"""Quantile bins of a numeric label that the split and the folds stratify by."""


def _text(value: Any) -> str:
    """A sheet value as label text: empty for a missing one, ``2`` for a float ``2.0``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _grade(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def mil_classes(labels: pd.Series, mil: Mapping[str, Any], source: str) -> list[str]:
    """The declared classes (``mil.classes``), or the labels found, sorted (numerically when
    they are all numbers); checks the count fits ``mil.task`` (none for a numeric label)."""
    if mil["task"] in OUTCOME_TASKS:
        return []
    declared = mil.get("classes")
    if declared:
        classes = [_text(c) for c in declared]
    else:
        found = sorted({v for v in labels if v})
        numeric = all(_grade(v) is not None for v in found)
        classes = sorted(found, key=lambda v: float(v)) if numeric else found
    task = mil["task"]
    if task not in TASKS:
        raise InputError("config", f"mil.task must be one of {name_some(TASKS)}, not {task!r}")
    if task == "binary" and len(classes) != 2:
        raise InputError(source, f"mil.task binary needs 2 classes, found {name_some(classes)}")
    if len(classes) < 2:
        raise InputError(source, f"mil needs 2 or more classes, found {name_some(classes)}")
    if task == "ordinal" and any(_grade(c) is None for c in classes):
        raise InputError(
            "config", f"ordinal classes must be grades (numbers): {name_some(classes)}"
        )
    return classes


def bag_table(samples: pd.DataFrame, mil: Mapping[str, Any], source: str) -> pd.DataFrame:
    """One row per slide: ``slide_id, patient_id, bag_id, group, label, y`` (class code,
    -1 for a predict-only slide, whose label is empty).

    Raises :class:`InputError` naming the sheet, the row (line of the file) and the value for
    a label outside the declared classes, an ordinal grade outside their range, a missing bag
    column or bag id, or two labels in one bag (``mil.bag: patient``: two in one patient).
    A slide with an empty label in a labelled bag takes the bag's label. ``mil.task:
    survival`` reads the outcome columns instead of ``label`` (:func:`survival_labels`),
    adds ``target`` (the time) and ``event``, and refuses slide bags (one outcome per
    patient).
    """
    survival = mil["task"] == "survival"
    if survival:
        samples = samples.assign(label=survival_labels(samples, mil, source))
    if "label" not in samples.columns:
        raise InputError(source, "mil needs a label column (one label per slide; empty: predict)")
    bag = mil["bag"]
    if survival and bag == "slide":
        raise InputError(
            "config",
            "mil.task survival needs one outcome per patient: mil.bag patient "
            "(or a sheet column), not slide",
        )
    column = {"slide": "slide_id", "patient": "patient_id"}.get(bag, bag)
    if column not in samples.columns:
        raise InputError(source, f"mil.bag is {bag!r} but the sheet has no column {column!r}")
    table = samples.reset_index(drop=True)
    labels = table["label"].map(_text)
    bags = table[column].map(_text)
    line = pd.Series(np.arange(len(table)) + 2)  # line 1 is the header
    empty = bags == ""
    if empty.any():
        raise InputError(source, f"row {line[empty].iloc[0]}: empty {column} (mil.bag: {bag})")
    classes = mil_classes(labels, mil, source)
    numeric = mil["task"] in OUTCOME_TASKS
    for i in np.flatnonzero((labels != "") & ~labels.isin(classes) & (not numeric)):
        value = labels[i]
        grade, lo, hi = _grade(value), _grade(classes[0]), _grade(classes[-1])
        if mil["task"] == "ordinal" and grade is not None and not lo <= grade <= hi:
            cause = f"grade {value} is outside the range {classes[0]}-{classes[-1]}"
        else:
            cause = f"label {value!r} is not one of the classes {name_some(classes)}"
        raise InputError(source, f"row {line[i]}: {cause} (mil.classes)")
    if numeric and not survival:
        check_numeric(labels, line, source, mil["task"])
    for bag_id, idx in labels[labels != ""].groupby(bags).groups.items():
        values = labels[idx]
        if values.nunique() > 1:
            first, other = values.index[0], values.index[values != values.iloc[0]][0]
            what = {"slide_id": "slide", "patient_id": "patient"}.get(column, column)
            raise InputError(
                source,
                f"row {line[other]}: {'outcome (time:event)' if survival else 'label'} "
                f"{values[other]!r} differs from {values[first]!r} "
                f"(row {line[first]}) in the same {what} {bag_id} (mil.bag: {bag})",
            )
    bag_label = labels[labels != ""].groupby(bags).first()
    label = bags.map(bag_label).fillna("")
    out = pd.DataFrame(
        {
            "slide_id": table["slide_id"].astype(str),
            "patient_id": table["patient_id"].astype(str),
            "bag_id": bags,
            "label": label,
        }
    )
    if survival:
        parts = label.str.split(":", expand=True).reindex(columns=[0, 1])
        out["target"] = pd.to_numeric(parts[0].replace("", np.nan)).astype(float)
        out["event"] = pd.to_numeric(parts[1]).fillna(-1).astype(int)
        out["y"] = out.event
    elif numeric:
        out["target"] = pd.to_numeric(label.replace("", np.nan)).astype(float)
        out["y"] = numeric_strata(out.drop_duplicates("bag_id").set_index("bag_id").target)[
            out.bag_id
        ].to_numpy()
    else:
        out["y"] = label.map({c: i for i, c in enumerate(classes)}).fillna(-1).astype(int)
    out["group"] = bag_groups(out)
    return out[BAG_COLUMNS + (["target"] if numeric else []) + (["event"] if survival else [])]


def survival_labels(samples: pd.DataFrame, mil: Mapping[str, Any], source: str) -> pd.Series:
    """Each row's outcome as ``time:event`` (both empty: predict only, ``""``), from the
    sheet's ``mil.time_column`` and ``mil.event_column``.

    Raises :class:`InputError` naming the sheet, the row and the value of a missing column,
    a time missing, negative or not a number, or an event not 0 or 1.
    """
    time_col, event_col = mil["time_column"], mil["event_column"]
    for column, key in ((time_col, "time_column"), (event_col, "event_column")):
        if column not in samples.columns:
            raise InputError(source, f"mil.task survival: the sheet has no column {column!r} "
                             f"(mil.{key})")  # fmt: skip
    out = []
    for i, (t, e) in enumerate(zip(samples[time_col].map(_text), samples[event_col].map(_text),
                                   strict=True)):  # fmt: skip
        row = f"row {i + 2}"
        if t == "" and e == "":
            out.append("")
            continue
        time = _grade(t)
        if time is None or not np.isfinite(time) or time < 0:
            raise InputError(source, f"{row}: {time_col} {t!r} is not a time >= 0 "
                             f"(mil.task: survival)")  # fmt: skip
        if _grade(e) not in (0.0, 1.0):
            raise InputError(source, f"{row}: {event_col} {e!r} is not 0 or 1 "
                             f"(mil.task: survival)")  # fmt: skip
        out.append(f"{time:g}:{int(_grade(e))}")
    return pd.Series(out, index=samples.index, dtype=object)


def check_numeric(labels: pd.Series, line: pd.Series, source: str, task: str) -> None:
    """Raise :class:`InputError` naming the row and value of the first label that is not a
    finite number."""
    for i in np.flatnonzero(labels != ""):
        value = _grade(labels[i])
        if value is None or not np.isfinite(value):
            raise InputError(
                source, f"row {line[i]}: label {labels[i]!r} is not a number (mil.task: {task})"
            )


def numeric_strata(target: pd.Series) -> pd.Series:
    """Each value's quantile bin (``0..STRATA-1``, fewer with few distinct values), -1 for a
    missing one: what the split and the folds stratify a numeric label by."""
    known = target.dropna()
    bins = min(STRATA, max(known.nunique(), 1))
    ranks = known.rank(method="first")
    codes = np.floor((ranks - 1) * bins / max(len(known), 1)).astype(int)
    return codes.reindex(target.index).fillna(-1).astype(int)


def bag_groups(table: pd.DataFrame) -> pd.Series:
    """Each row's group: bags and patients tied by shared slides (union-find), named by their
    smallest patient id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for patient, bag in zip(table["patient_id"], table["bag_id"], strict=True):
        a, b = find("p:" + str(patient)), find("b:" + str(bag))
        if a != b:
            parent[max(a, b)] = min(a, b)
    root = table["patient_id"].astype(str).map(lambda p: find("p:" + p))
    name = table["patient_id"].astype(str).groupby(root).transform("min")
    return name


def split_bags(
    table: pd.DataFrame, *, test_fraction: float, seed: int, source: str
) -> pd.DataFrame:
    """``table`` with ``split``: ``train``/``test`` by group (the patient split, stratified by
    the bag label), ``predict`` for groups without a label (an unlabelled slide of a labelled
    group goes with its group, and only its label is missing)."""
    labelled = table[table.y >= 0]
    if labelled.group.nunique() < 2:
        raise SplitError(source, "mil needs labelled bags of 2 or more patients")
    grouped = labelled.assign(patient_id=labelled.group)
    # a class label, or a numeric label's quantile bin (y)
    strata = grouped.groupby("group")["y" if "target" in grouped else "label"].first()
    split = split_patients(
        grouped, set(), test_fraction=test_fraction, seed=seed, stratify_by=None,
        source=source, strata=strata,
    )  # fmt: skip
    side = split.groupby("group").split.first()
    out = table.assign(split=table.group.map(side).fillna("predict"))
    check_bag_split(out, source)
    return out


def bag_folds(table: pd.DataFrame, *, k: int, seed: int, source: str) -> pd.DataFrame:
    """``table`` (of :func:`split_bags`) with ``fold``: the training groups in ``k`` folds,
    stratified by bag label (StratifiedGroupKFold); -1 for test and predict rows."""
    train = table[table.split == "train"]
    if k < 2 or k > train.group.nunique():
        raise SplitError(
            source, f"folds={k} needs 2 to {train.group.nunique()} training patient groups"
        )
    bags = train.drop_duplicates("bag_id")
    from sklearn.model_selection import StratifiedGroupKFold  # 1.8 s: only where folds are drawn

    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of_group: dict[str, int] = {}
    for fold, (_, idx) in enumerate(cv.split(bags, bags.y, groups=bags.group)):
        fold_of_group |= dict.fromkeys(bags.group.iloc[idx], fold)
    out = table.copy()
    out["fold"] = out.group.map(fold_of_group).fillna(-1).astype(int)
    out.loc[out.split != "train", "fold"] = -1
    check_bag_folds(out, source)
    return out


def check_bag_split(table: pd.DataFrame, source: str) -> None:
    """Raise :class:`SplitError` when a bag or a patient has slides on two sides."""
    for unit in ("bag_id", "patient_id"):
        assert_patients_disjoint(table, "split", source, unit)


def check_bag_folds(table: pd.DataFrame, source: str) -> None:
    """Raise :class:`SplitError` unless every bag and patient is on one side and in one fold,
    test and predict rows in no fold, and every training row in one of folds ``0..k-1``."""
    check_bag_split(table, source)
    train = table.split == "train"
    for unit in ("bag_id", "patient_id"):
        assert_patients_disjoint(table[train], "fold", source, unit)
    stray = table[(train & (table.fold < 0)) | (~train & (table.fold >= 0))]
    if len(stray):
        raise SplitError(
            source, f"slide(s) {name_some(stray.slide_id)} have a fold that their split denies"
        )


def read_bag_folds(path: str | Path) -> pd.DataFrame:
    """The usable rows of a fold table (``results/mil/folds.tsv``), checked as
    :func:`check_bag_folds` does: a table edited so that a bag leaks is refused."""
    ids = dict.fromkeys(("slide_id", "patient_id", "bag_id", "group", "label"), str)
    try:
        folds = pd.read_csv(path, sep="\t", dtype=ids, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as err:
        raise InputError(path, f"not a readable fold table ({err})") from None
    folds = folds[folds.split != "excluded"].reset_index(drop=True)
    if "target" in folds:  # a numeric label (empty: predict only)
        folds["target"] = pd.to_numeric(folds.target.replace("", np.nan)).astype(float)
    if "event" in folds:  # survival's event (-1: predict only)
        folds["event"] = pd.to_numeric(folds.event).fillna(-1).astype(int)
    check_bag_folds(folds, str(path))
    return folds


def predict_bag_ids(sheet: pd.DataFrame, bag: str, source: str) -> pd.Series:
    """Each row's bag id in a prediction sheet (no labels): the column ``mil.bag`` names.

    Raises :class:`InputError` naming ``source`` when the sheet lacks that column or a row's
    bag id is empty.
    """
    column = {"slide": "slide_id", "patient": "patient_id"}.get(bag, bag)
    if column not in sheet.columns:
        raise InputError(source, f"mil.bag is {bag!r} but the sheet has no column {column!r}")
    bags = sheet[column].map(_text)
    empty = np.flatnonzero((bags == "").to_numpy())
    if len(empty):
        raise InputError(source, f"row {empty[0] + 2}: empty {column} (mil.bag: {bag})")
    return bags
