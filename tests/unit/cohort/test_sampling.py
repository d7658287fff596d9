"""Negative undersampling (random or hardest first), weights, tile caps and fold tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histodetect.cohort.sampling import (
    cap_tiles,
    class_balanced_weights,
    fold_tables,
    lesion_distance,
    training_pool,
    undersample,
    weight_tiles,
)
from histodetect.errors import SplitError


def tiles(slide: str, labels: list[int] | np.ndarray) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "slide_id": slide,
            "x": (np.arange(n) % 10) * 64,
            "y": (np.arange(n) // 10) * 64,
            "size": 64,
            "label": np.asarray(labels, np.int64),
        }
    )


def keys(df: pd.DataFrame) -> set[tuple[str, int, int]]:
    return set(zip(df.slide_id, df.x, df.y, strict=True))


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    a = tiles("a", rng.choice([0, 0, 0, 0, 0, 0, 1, -1], 120))
    b = tiles("b", rng.choice([0, 0, 0, 0, 1, -1], 80))
    return pd.concat([a, b], ignore_index=True)


# --- undersample ----------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0, 3.0])
def test_undersample_ratio(table: pd.DataFrame, ratio: float) -> None:
    out = undersample(table, ratio=ratio, seed=1)
    n_pos = int((table.label == 1).sum())
    n_neg = int((table.label == 0).sum())
    assert (out.label == 1).sum() == n_pos
    assert (out.label == 0).sum() == min(n_neg, round(ratio * n_pos))
    assert (out.label >= 0).all()
    assert keys(out[out.label == 1]) == keys(table[table.label == 1])
    assert keys(out) <= keys(table[table.label >= 0])
    assert not out.duplicated(["slide_id", "x", "y"]).any()
    assert out.index.tolist() == list(range(len(out)))


def test_undersample_keeps_all_when_ratio_large(table: pd.DataFrame) -> None:
    out = undersample(table, ratio=100.0, seed=0)
    assert keys(out) == keys(table[table.label >= 0])


def test_undersample_no_positives_keeps_nothing() -> None:
    out = undersample(tiles("a", [0, 0, 0, -1]), ratio=3.0, seed=0)
    assert len(out) == 0


def test_undersample_deterministic_and_seeded(table: pd.DataFrame) -> None:
    a = undersample(table, ratio=1.0, seed=5)
    b = undersample(table, ratio=1.0, seed=5)
    pd.testing.assert_frame_equal(a, b)
    c = undersample(table, ratio=1.0, seed=6)
    assert keys(a[a.label == 0]) != keys(c[c.label == 0])
    assert keys(a[a.label == 1]) == keys(c[c.label == 1])


def test_undersample_sorted(table: pd.DataFrame) -> None:
    out = undersample(table, ratio=2.0, seed=0)
    expect = out.sort_values(["slide_id", "y", "x"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expect)


# --- cap_tiles ------------------------------------------------------------------------------


def test_cap_tiles_none_drops_ignored_only(table: pd.DataFrame) -> None:
    out = cap_tiles(table, max_tiles=None, seed=0)
    assert keys(out) == keys(table[table.label >= 0])
    assert (out.label >= 0).all()


def test_cap_tiles_caps_and_keeps_positives(table: pd.DataFrame) -> None:
    n_pos = int((table.label == 1).sum())
    out = cap_tiles(table, max_tiles=n_pos + 10, seed=3)
    assert len(out) == n_pos + 10
    assert (out.label == 1).sum() == n_pos
    assert (out.label == 0).sum() == 10
    assert cap_tiles(table, max_tiles=n_pos + 10, seed=3).equals(out)
    other = cap_tiles(table, max_tiles=n_pos + 10, seed=4)
    assert keys(other) != keys(out)


def test_cap_tiles_below_positive_count_keeps_positives(table: pd.DataFrame) -> None:
    n_pos = int((table.label == 1).sum())
    out = cap_tiles(table, max_tiles=5, seed=0)
    assert (out.label == 1).sum() == n_pos
    assert (out.label == 0).sum() == 0


def test_cap_tiles_under_cap_untouched(table: pd.DataFrame) -> None:
    n = int((table.label >= 0).sum())
    assert len(cap_tiles(table, max_tiles=n, seed=0)) == n


# --- fold_tables ----------------------------------------------------------------------------


@pytest.fixture
def fold_setup(tmp_path: Path) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(1)
    folds = pd.DataFrame(
        {
            "slide_id": ["s1", "s2", "s3", "s4", "s5"],
            "path": [f"/slides/s{i}.svs" for i in range(1, 6)],
            "patient_id": ["p1", "p1", "p2", "p3", "p4"],
            "fold": [0, 0, 1, 1, 2],
        }
    )
    paths = []
    for sid in [*folds.slide_id, "test_slide"]:
        t = tiles(sid, rng.choice([0, 0, 0, 1, -1], 40))
        p = tmp_path / f"{sid}.parquet"
        t.to_parquet(p)
        paths.append(str(p))
    empty = tmp_path / "empty.parquet"
    tiles("s9", []).to_parquet(empty)
    paths.append(str(empty))
    return folds, paths


def test_training_pool_is_every_tile_of_the_other_folds(
    fold_setup: tuple[pd.DataFrame, list[str]],
) -> None:
    folds, paths = fold_setup
    pool = training_pool(folds, paths, fold=1)
    assert set(pool.slide_id) == {"s1", "s2", "s5"}  # not fold 1's s3, s4 nor the test slide
    assert len(pool) == 3 * 40  # not undersampled: every tile, ignored ones (-1) too
    assert not set(pool.patient_id) & {"p2", "p3"}
    assert (pool.path == pool.slide_id.map(folds.set_index("slide_id").path)).all()


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_fold_tables(fold_setup: tuple[pd.DataFrame, list[str]], fold: int) -> None:
    folds, paths = fold_setup
    train, val = fold_tables(folds, paths, fold=fold, neg_ratio=1.0, max_val_tiles=None, seed=0)
    val_slides = set(folds.slide_id[folds.fold == fold])
    assert set(val.slide_id) == val_slides
    assert not set(train.slide_id) & val_slides
    assert set(train.slide_id) <= set(folds.slide_id) - val_slides
    assert "test_slide" not in set(train.slide_id) | set(val.slide_id)
    for df in (train, val):
        assert {"path", "patient_id", "fold"} <= set(df.columns)
        assert (df.label >= 0).all()
        expect_path = df.slide_id.map(folds.set_index("slide_id").path)
        assert (df.path == expect_path).all()
    assert (val.fold == fold).all()
    assert (train.fold != fold).all()
    assert not set(train.patient_id) & set(val.patient_id)
    # validation is not undersampled: every labelled tile of the fold's slides is there
    all_val = pd.concat([pd.read_parquet(p) for p in paths if Path(p).stem in val_slides])
    assert len(val) == int((all_val.label >= 0).sum())
    # training is undersampled 1:1
    assert (train.label == 0).sum() <= (train.label == 1).sum()


def test_fold_tables_cap_and_seed(fold_setup: tuple[pd.DataFrame, list[str]]) -> None:
    folds, paths = fold_setup
    _, val = fold_tables(folds, paths, fold=1, neg_ratio=2.0, max_val_tiles=30, seed=0)
    assert len(val) <= 30
    a, _ = fold_tables(folds, paths, fold=1, neg_ratio=2.0, max_val_tiles=30, seed=0)
    b, _ = fold_tables(folds, paths, fold=1, neg_ratio=2.0, max_val_tiles=30, seed=0)
    pd.testing.assert_frame_equal(a, b)


def test_fold_tables_refuses_patient_in_two_folds(
    fold_setup: tuple[pd.DataFrame, list[str]],
) -> None:
    folds, paths = fold_setup
    leaked = folds.copy()
    leaked.loc[leaked.slide_id == "s2", "fold"] = 1  # p1 now in folds 0 and 1
    with pytest.raises(SplitError, match="fold 0"):
        fold_tables(leaked, paths, fold=0, neg_ratio=1.0, max_val_tiles=None, seed=0)


# --- hard negatives and weighted sampling ---------------------------------------------------


def ring_slide() -> pd.DataFrame:
    """10x10 tiles with one positive at (row 5, col 5) and a faint lesion at (0, 0)."""
    t = tiles("h", [0] * 100)
    t.loc[55, "label"] = 1
    t["coverage"] = 0.0
    t.loc[55, "coverage"] = 1.0
    t.loc[0, "coverage"] = 0.01  # below the negative threshold: labelled 0 but hard
    return t


def test_lesion_distance() -> None:
    t = ring_slide()
    d = lesion_distance(t)
    assert d[55] == 0 and d[0] == 0
    assert d[44] == 1 and d[66] == 1 and d[33] == 2 and d[99] == 4
    assert np.isinf(lesion_distance(tiles("n", [0, 0, 0]))).all()


def test_hard_negatives_first() -> None:
    t = ring_slide()
    out = undersample(t, ratio=12.0, seed=3, hard_first=True, hard_radius=1)
    neg = out[out.label == 0]
    assert len(neg) == 12
    ring = {(5 + dx, 5 + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)} - {(5, 5)}
    corner = {(0, 0), (0, 1), (1, 0), (1, 1)}  # the faint lesion and its 3 neighbours
    assert set(zip(neg.x // 64, neg.y // 64, strict=True)) == ring | corner
    few = undersample(t, ratio=1.0, seed=3, hard_first=True)
    assert set(zip(few[few.label == 0].x, few[few.label == 0].y, strict=True)) == {(0, 0)}
    rnd = undersample(t, ratio=12.0, seed=3)
    assert keys(rnd[rnd.label == 0]) != keys(neg)  # without the option: random negatives
    more = undersample(t, ratio=30.0, seed=3, hard_first=True, hard_radius=1)
    assert keys(neg) < keys(more) and (more.label == 0).sum() == 30
    wide = undersample(t, ratio=33.0, seed=3, hard_first=True, hard_radius=2)
    wide_xy = set(zip(wide.x // 64, wide.y // 64, strict=True)) - {(5, 5)}
    near = {(5 + dx, 5 + dy) for dx in range(-2, 3) for dy in range(-2, 3)} - {(5, 5)}
    assert wide_xy == near | {(x, y) for x in range(3) for y in range(3)}


def test_weight_tiles(table: pd.DataFrame) -> None:
    w = weight_tiles(table, ratio=2.0)
    n_pos, n_neg = int((table.label == 1).sum()), int((table.label == 0).sum())
    assert len(w) == n_pos + n_neg and (w.label >= 0).all()
    assert (w.weight[w.label == 1] == 1.0).all()
    assert w.weight.sum() == pytest.approx(3 * n_pos)
    rng = np.random.default_rng(0)
    draws = rng.choice(len(w), size=20_000, p=w.weight / w.weight.sum())
    assert (w.label.to_numpy()[draws] == 0).mean() == pytest.approx(2 / 3, abs=0.02)


def test_fold_tables_weighted(fold_setup: tuple[pd.DataFrame, list[str]]) -> None:
    folds, paths = fold_setup
    train, val = fold_tables(
        folds, paths, fold=0, neg_ratio=1.0, max_val_tiles=None, seed=0, strategy="weighted"
    )
    all_train = pd.concat([pd.read_parquet(p) for p in paths if Path(p).stem in {"s3", "s4", "s5"}])
    assert len(train) == int((all_train.label >= 0).sum())  # nothing dropped
    assert "weight" in train.columns and "weight" not in val.columns
    with pytest.raises(ValueError, match=r"sampling\.strategy"):
        fold_tables(folds, paths, fold=0, neg_ratio=1.0, max_val_tiles=None, seed=0, strategy="x")


def test_class_balanced_draw_holds_classes_equally() -> None:
    """A seeded draw of the training loader's size, counted: each class a third, epoch kept."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    labels = np.repeat([0, 1, 2], [900, 80, 20])
    w = class_balanced_weights(labels)
    assert w.sum() == pytest.approx(len(labels))  # the epoch length stays
    sampler = WeightedRandomSampler(
        torch.tensor(w), 30000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    counts = np.bincount(labels[list(sampler)], minlength=3) / 30000
    np.testing.assert_allclose(counts, 1 / 3, atol=0.01)
    # Existing weights (strategy weighted) keep their shape within a class and their total.
    prior = np.where(np.arange(1000) % 2, 2.0, 1.0)
    w2 = class_balanced_weights(labels, prior)
    assert w2.sum() == pytest.approx(prior.sum())
    for c in range(3):
        rows = labels == c
        assert w2[rows].sum() == pytest.approx(prior.sum() / 3)
        np.testing.assert_allclose(w2[rows] / w2[rows].min(), prior[rows] / prior[rows].min())
