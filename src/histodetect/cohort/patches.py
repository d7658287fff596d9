"""Training from a folder of labelled patches: ``labels.csv`` to grouped folds and fold tables.

``labels.csv`` has columns ``path,label,group_id`` (more are kept); ``path`` is relative to
the CSV's folder (or absolute) and ``group_id`` ties together patches that must never be split
(a patient, or one image and its augmented copies). It plays the role of ``patient_id``.
Fold tables have the columns :class:`~histodetect.fit.data.TileDataset` reads as image files:
``path`` (absolute), ``tile_px``, integer ``label``, ``class_name``, ``patient_id``,
``slide_id`` (both the group) and ``fold``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from histodetect.cohort.splits import assert_patients_disjoint
from histodetect.errors import InputError, SplitError, name_some
from histodetect.io import atomic_path

PATCH_COLUMNS = ["path", "label", "group_id"]


class PatchTableError(InputError):
    """A ``labels.csv`` that cannot be used."""


def read_patch_labels(
    csv: str | Path, classes: Sequence[str] | None = None, *, check_files: bool = True
) -> pd.DataFrame:
    """Read and check ``labels.csv``; encode labels as integers.

    Args:
        csv: the table.
        classes: class names in code order (the first is 0; for two classes the second is the
            positive one); default: sorted label values (numerically if all are integers).
        check_files: fail on the first listed file that does not exist.

    Returns:
        The table with absolute ``path``, ``class_name`` (the label as text), integer
        ``label`` and ``patient_id``/``slide_id`` equal to ``group_id`` (all as text).
    """
    csv = Path(csv)
    try:
        df = pd.read_csv(csv, dtype={"label": str, "group_id": str, "path": str}, index_col=False)
    except (OSError, ValueError) as err:
        raise PatchTableError(csv, f"cannot read the table ({err})") from err
    missing = [c for c in PATCH_COLUMNS if c not in df.columns]
    if missing:
        raise PatchTableError(csv, f"lacks column(s) {name_some(missing)}")
    if df.empty:
        raise PatchTableError(csv, "lists no patch")
    for col in PATCH_COLUMNS:
        empty = df[col].isna() | (df[col].str.strip() == "")
        if empty.any():
            raise PatchTableError(csv, f"row {int(np.argmax(empty)) + 2}: empty {col}")
    names = _class_order(df["label"], classes, csv)
    codes = {name: i for i, name in enumerate(names)}
    unknown = ~df["label"].isin(codes)
    if unknown.any():
        row = int(np.argmax(unknown))
        raise PatchTableError(csv, f"row {row + 2}: label {df.label[row]!r} not in {names}")
    root = csv.resolve().parent
    out = df.copy()
    out["path"] = [str(p if Path(p).is_absolute() else root / p) for p in df["path"]]
    if check_files:
        exists = np.array([Path(p).is_file() for p in out["path"]])
        if not exists.all():
            row = int(np.argmin(exists))
            raise PatchTableError(csv, f"row {row + 2}: no file {df.path[row]!r}")
    out["class_name"] = df["label"]
    out["label"] = df["label"].map(codes).astype(np.int64)
    out["patient_id"] = out["slide_id"] = df["group_id"]
    return out


def _class_order(labels: pd.Series, classes: Sequence[str] | None, csv: Path) -> list[str]:
    if classes is not None:
        names = [str(c) for c in classes]
        if len(set(names)) != len(names) or len(names) < 2:
            raise PatchTableError(csv, f"patches.classes must be 2+ distinct names, not {names}")
        return names
    values = sorted(labels.unique())
    if all(v.lstrip("-").isdigit() for v in values):
        values = sorted(values, key=int)
    if len(values) < 2:
        raise PatchTableError(csv, f"needs at least two labels, found {values}")
    return list(values)


def assign_folds(patches: pd.DataFrame, *, k: int, seed: int) -> pd.DataFrame:
    """Add a ``fold`` column: StratifiedGroupKFold by ``group_id``, stratified by label.

    Raises:
        SplitError: with fewer groups than folds, or if a group would fall in two folds.
    """
    n_groups = patches.group_id.nunique()
    if k < 2 or n_groups < k:
        raise SplitError("labels.csv", f"{n_groups} group(s) cannot be split into {k} folds")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = patches.reset_index(drop=True)
    out["fold"] = -1
    for fold, (_, idx) in enumerate(cv.split(out, out.label, groups=out.group_id)):
        out.loc[idx, "fold"] = fold
    assert_patients_disjoint(out, "fold", "labels.csv")
    return out


def subsample_groups(patches: pd.DataFrame, *, per_group: int | None, seed: int) -> pd.DataFrame:
    """At most ``per_group`` seeded random patches of each group (all when None)."""
    if per_group is None:
        return patches
    rng = np.random.default_rng(seed)
    keys = pd.Series(rng.random(len(patches)), index=patches.index)
    rank = keys.groupby(patches.group_id).rank(method="first")
    return patches[rank <= per_group]


def fold_tables(
    patches: pd.DataFrame, *, fold: int, tile_px: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training (other folds) and validation (this fold) tables of a foldified patch table."""
    table = patches.assign(tile_px=int(tile_px))
    role = np.where(table.fold == fold, "val", "train")
    assert_patients_disjoint(table.assign(role=role), "role", f"fold {fold}")
    train = table[role == "train"].reset_index(drop=True)
    val = table[role == "val"].reset_index(drop=True)
    return train, val


def write_patch_folds(
    csv: str | Path,
    folds_tsv: str | Path,
    fold_paths: Sequence[tuple[str | Path, str | Path]],
    *,
    tile_px: int,
    seed: int,
    classes: Sequence[str] | None = None,
    per_group: int | None = None,
) -> pd.DataFrame:
    """``labels.csv`` to ``folds_tsv`` plus one ``(train, val)`` parquet pair per fold.

    The number of folds is ``len(fold_paths)``; returns the foldified table.
    """
    patches = read_patch_labels(csv, classes)
    patches = subsample_groups(patches, per_group=per_group, seed=seed)
    folded = assign_folds(patches, k=len(fold_paths), seed=seed)
    with atomic_path(folds_tsv) as tmp:
        folded.to_csv(tmp, sep="\t", index=False)
    for fold, (train_path, val_path) in enumerate(fold_paths):
        for table, path in zip(
            fold_tables(folded, fold=fold, tile_px=tile_px), (train_path, val_path), strict=True
        ):
            with atomic_path(path) as tmp:
                table.to_parquet(tmp, index=False)
    return folded


def git_blob_sha1(path: str | Path) -> str:
    """The file's git blob hash (``git hash-object``): equal for byte-identical files."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def seen_images(seen: pd.DataFrame, patches: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``patches`` that models trained or validated on ``seen`` have seen, and why.

    An image counts as seen when it has the same resolved ``path``, the same content
    (``git_blob_sha1``, hashed from the file where a table lacks it) or the same ``group_id``
    (another copy of one original image) as an image of ``seen``. Returns those rows with a
    ``seen_by`` column (``path``, ``content`` or ``group``).
    """
    out = patches.copy()
    for table in (seen, out):
        if "git_blob_sha1" not in table or table["git_blob_sha1"].isna().any():
            table["git_blob_sha1"] = [git_blob_sha1(p) for p in table["path"]]
    why = pd.Series("", index=out.index)
    for col, name in (("group_id", "group"), ("git_blob_sha1", "content"), ("path", "path")):
        why[out[col].astype(str).isin(set(seen[col].astype(str)))] = name
    return out[why != ""].assign(seen_by=why[why != ""])
