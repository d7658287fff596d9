"""Per-fold training sets: negatives undersampled to a ratio of positives."""

from __future__ import annotations

import numpy as np
import pandas as pd


def undersample(tiles: pd.DataFrame, *, ratio: float, seed: int) -> pd.DataFrame:
    """Keep every positive tile and at most ``ratio`` negatives per positive (seeded).

    Ignored tiles (label -1) are dropped. With no positive tile, ``ratio`` negatives are kept
    per slide-average positive count of zero, i.e. none; so a fold without lesions fails later
    loudly rather than training on one class.
    """
    labelled = tiles[tiles.label >= 0]
    pos = labelled[labelled.label == 1]
    neg = labelled[labelled.label == 0]
    n_neg = min(len(neg), round(ratio * len(pos)))
    rng = np.random.default_rng(seed)
    keep = rng.choice(len(neg), size=n_neg, replace=False) if n_neg else np.array([], int)
    out = pd.concat([pos, neg.iloc[np.sort(keep)]])
    return out.sort_values(["slide_id", "y", "x"]).reset_index(drop=True)


def cap_tiles(tiles: pd.DataFrame, *, max_tiles: int | None, seed: int) -> pd.DataFrame:
    """A seeded subsample of at most ``max_tiles`` labelled tiles, all positives first."""
    labelled = tiles[tiles.label >= 0]
    if max_tiles is None or len(labelled) <= max_tiles:
        return labelled.reset_index(drop=True)
    pos = labelled[labelled.label == 1]
    neg = labelled[labelled.label == 0]
    n_neg = max(0, max_tiles - len(pos))
    rng = np.random.default_rng(seed)
    keep = rng.choice(len(neg), size=min(n_neg, len(neg)), replace=False)
    out = pd.concat([pos, neg.iloc[np.sort(keep)]])
    return out.sort_values(["slide_id", "y", "x"]).reset_index(drop=True)


def fold_tables(
    folds: pd.DataFrame,
    label_paths: list[str],
    *,
    fold: int,
    neg_ratio: float,
    max_val_tiles: int | None,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training (undersampled) and validation tiles of one fold, with ``path`` and ``patient_id``.

    Only slides listed in ``folds`` (the training patients) are used; validation tiles are the
    tiles of the fold's own patients.
    """
    from histodetect.splits import assert_patients_disjoint

    meta = folds.set_index("slide_id")[["path", "patient_id", "fold"]]
    tables = [pd.read_parquet(p) for p in label_paths]
    tiles = pd.concat([t for t in tables if len(t) and t.slide_id.iloc[0] in meta.index])
    tiles = tiles.join(meta, on="slide_id")
    assert_patients_disjoint(
        tiles.assign(role=np.where(tiles.fold == fold, "val", "train")), "role", f"fold {fold}"
    )
    train = undersample(tiles[tiles.fold != fold], ratio=neg_ratio, seed=seed + fold)
    val = cap_tiles(tiles[tiles.fold == fold], max_tiles=max_val_tiles, seed=seed + fold)
    return train, val
