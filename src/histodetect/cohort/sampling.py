"""Per-fold training sets: negatives undersampled to a ratio of positives, or weighted."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from histodetect.cohort.splits import assert_patients_disjoint

STRATEGIES = ("undersample", "weighted")


def lesion_distance(tiles: pd.DataFrame) -> np.ndarray:
    """Chessboard distance, in tiles, from each tile to the nearest lesion tile of its slide.

    A lesion tile is one labelled positive or ignored, or with ``coverage > 0`` (a negative
    with a little lesion); those get 0. Slides without one get ``inf``. Grid positions come
    from ``row``/``col`` (or ``y // size``, ``x // size``).
    """
    if "row" in tiles.columns:
        rows, cols = tiles["row"].to_numpy(np.int64), tiles["col"].to_numpy(np.int64)
    else:
        rows = (tiles.y // tiles["size"]).to_numpy(np.int64)
        cols = (tiles.x // tiles["size"]).to_numpy(np.int64)
    lesion = tiles.label.to_numpy() != 0
    if "coverage" in tiles.columns:
        lesion |= tiles.coverage.to_numpy() > 0
    dist = np.full(len(tiles), np.inf)
    for idx in tiles.groupby("slide_id", sort=False).indices.values():
        if not lesion[idx].any():
            continue
        r, c = rows[idx] - rows[idx].min(), cols[idx] - cols[idx].min()
        free = np.ones((r.max() + 1, c.max() + 1), bool)
        free[r[lesion[idx]], c[lesion[idx]]] = False
        dist[idx] = ndimage.distance_transform_cdt(free, metric="chessboard")[r, c]
    return dist


def undersample(
    tiles: pd.DataFrame,
    *,
    ratio: float,
    seed: int,
    hard_first: bool = False,
    hard_radius: int = 1,
) -> pd.DataFrame:
    """Keep every positive tile and at most ``ratio`` negatives per positive (seeded).

    Positive means ``label >= 1`` (any lesion class). Ignored tiles (label -1) are dropped.
    With no positive tile no negative is kept, so a fold without lesions fails later loudly
    rather than training on one class. With ``hard_first``, negatives within ``hard_radius``
    tiles of a lesion (nearest first, then with coverage > 0 counted as distance 0) are
    taken before the random rest. Negatives marked ``hard`` (a ``hard`` column: tiles
    holding a look-alike, ``labels.negative_classes``) come before all others.
    """
    dist = lesion_distance(tiles) if hard_first else None
    keep_rows = tiles.label.to_numpy() >= 0
    labelled = tiles[keep_rows]
    pos = labelled[labelled.label >= 1]
    neg_mask = labelled.label.to_numpy() == 0
    neg = labelled[neg_mask]
    n_neg = min(len(neg), round(ratio * len(pos)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(neg))
    if dist is not None:
        d = dist[keep_rows][neg_mask]
        rank = np.where(d <= hard_radius, d, np.inf)
        order = order[np.argsort(rank[order], kind="stable")]
    if "hard" in neg.columns:
        order = order[np.argsort(~neg["hard"].eq(True).to_numpy()[order], kind="stable")]
    keep = order[:n_neg]
    out = pd.concat([pos, neg.iloc[np.sort(keep)]])
    return out.sort_values(["slide_id", "y", "x"]).reset_index(drop=True)


def weight_tiles(tiles: pd.DataFrame, *, ratio: float) -> pd.DataFrame:
    """All labelled tiles with a sampling ``weight``: positives 1, negatives share ``ratio``
    times the positive count, so ``weight.sum()`` is the size of an undersampled epoch and
    a weighted draw gives ``ratio`` negatives per positive on average (the training loader,
    :func:`histodetect.fit.data.make_loader`, draws ``round(weight.sum())`` tiles per epoch).
    """
    labelled = tiles[tiles.label >= 0].copy()
    n_pos = int((labelled.label >= 1).sum())
    n_neg = int((labelled.label == 0).sum())
    w_neg = ratio * n_pos / n_neg if n_neg else 0.0
    labelled["weight"] = np.where(labelled.label >= 1, 1.0, w_neg)
    return labelled.sort_values(["slide_id", "y", "x"]).reset_index(drop=True)


def class_balanced_weights(labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Sampling weights that give every class present the same total, keeping the total.

    ``weights`` (one per row, e.g. from :func:`weight_tiles`; default all 1) are rescaled per
    class so that a weighted draw of ``round(weights.sum())`` rows per epoch (what
    :func:`histodetect.fit.data.make_loader` draws) holds the classes in equal
    expectation: the epoch length stays, only its class mix changes.
    """
    labels = np.asarray(labels)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    classes = np.unique(labels)
    out = np.zeros(len(labels))
    for c in classes:
        rows = labels == c
        total = w[rows].sum()
        if total > 0:
            out[rows] = w[rows] * (w.sum() / len(classes)) / total
    return out


def cap_tiles(tiles: pd.DataFrame, *, max_tiles: int | None, seed: int) -> pd.DataFrame:
    """A seeded subsample of at most ``max_tiles`` labelled tiles, all positives first."""
    labelled = tiles[tiles.label >= 0]
    if max_tiles is None or len(labelled) <= max_tiles:
        return labelled.reset_index(drop=True)
    pos = labelled[labelled.label >= 1]
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
    strategy: str = "undersample",
    hard_first: bool = False,
    hard_radius: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation tiles of one fold, with ``path`` and ``patient_id``.

    Training tiles are undersampled (``strategy="undersample"``, optionally hardest
    negatives first) or all kept with a ``weight`` column (``"weighted"``). Only slides
    listed in ``folds`` (the training patients) are used; validation tiles are the tiles of
    the fold's own patients.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"sampling.strategy must be one of {STRATEGIES}, not {strategy!r}")
    meta = folds.set_index("slide_id")[["path", "patient_id", "fold"]]
    tables = [pd.read_parquet(p) for p in label_paths]
    tiles = pd.concat([t for t in tables if len(t) and t.slide_id.iloc[0] in meta.index])
    tiles = tiles.join(meta, on="slide_id")
    assert_patients_disjoint(
        tiles.assign(role=np.where(tiles.fold == fold, "val", "train")), "role", f"fold {fold}"
    )
    rest = tiles[tiles.fold != fold]
    if strategy == "weighted":
        train = weight_tiles(rest, ratio=neg_ratio)
    else:
        train = undersample(
            rest, ratio=neg_ratio, seed=seed + fold, hard_first=hard_first, hard_radius=hard_radius
        )
    val = cap_tiles(tiles[tiles.fold == fold], max_tiles=max_val_tiles, seed=seed + fold)
    return train, val


def training_pool(folds: pd.DataFrame, label_paths: list[str], *, fold: int) -> pd.DataFrame:
    """Every labelled tile of the slides of the folds other than ``fold`` (the fold's
    training slides, all tiles, not undersampled), with ``path`` and ``patient_id``."""
    meta = folds.set_index("slide_id")[["path", "patient_id", "fold"]]
    tables = [pd.read_parquet(p) for p in label_paths]
    tiles = pd.concat([t for t in tables if len(t) and t.slide_id.iloc[0] in meta.index])
    tiles = tiles.join(meta, on="slide_id")
    return tiles[tiles.fold.notna() & (tiles.fold != fold)].reset_index(drop=True)
