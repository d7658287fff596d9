"""Boxes from constructed heatmaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from histodetect.detection.boxes import OUTPUT_COLUMNS, boxes_from_heatmap, boxes_to_digilut
from histodetect.detection.heatmap import Heatmap
from histodetect.evaluation.detection_metrics import slide_fbeta

TILE = 256
OX, OY = 100.0, 50.0


def make_heatmap(prob: np.ndarray, *, mpp: float = 0.5, width: int = 100_000) -> Heatmap:
    return Heatmap("s1", prob, OX, OY, TILE, TILE, mpp, 0, width, 100_000)


def two_blobs() -> np.ndarray:
    prob = np.full((20, 30), np.nan)
    prob[5:15, 0:28] = 0.1
    prob[2:5, 3:7] = 0.9  # rows 2-4, cols 3-6
    prob[10:13, 20:25] = 0.7  # rows 10-12, cols 20-24
    prob[11, 22] = 0.95
    return prob


def test_two_blobs_give_exact_boxes() -> None:
    df = boxes_from_heatmap(make_heatmap(two_blobs()))
    assert list(df.columns) == OUTPUT_COLUMNS
    assert len(df) == 2
    b, a = df.iloc[0], df.iloc[1]  # sorted by score: blob B has the 0.95 tile
    assert [b.x1, b.y1, b.x2, b.y2] == [
        OX + 20 * TILE,
        OY + 10 * TILE,
        OX + 25 * TILE,
        OY + 13 * TILE,
    ]
    assert [a.x1, a.y1, a.x2, a.y2] == [OX + 3 * TILE, OY + 2 * TILE, OX + 7 * TILE, OY + 5 * TILE]
    assert b.score == pytest.approx(0.95) and a.score == pytest.approx(0.9)
    assert b.n_tiles == 15 and a.n_tiles == 12
    assert b.mean_prob == pytest.approx((14 * 0.7 + 0.95) / 15)
    assert a.area_um2 == pytest.approx(4 * TILE * 3 * TILE * 0.25)


def test_threshold_is_inclusive_and_nan_is_negative() -> None:
    prob = np.full((3, 3), np.nan)
    prob[1, 1] = 0.5
    assert len(boxes_from_heatmap(make_heatmap(prob), threshold=0.5)) == 1
    assert len(boxes_from_heatmap(make_heatmap(prob), threshold=0.51)) == 0
    empty = boxes_from_heatmap(make_heatmap(np.full((4, 4), np.nan)))
    assert list(empty.columns) == OUTPUT_COLUMNS and len(empty) == 0


def test_boxes_are_clipped_to_the_slide() -> None:
    prob = np.zeros((4, 4))
    prob[1:3, 2:4] = 0.8
    df = boxes_from_heatmap(make_heatmap(prob, width=int(OX + 3 * TILE + 10)))
    assert df.x2.iloc[0] == OX + 3 * TILE + 10


def test_min_neighbours_removes_isolated_tile() -> None:
    prob = two_blobs()
    prob[17, 2] = 0.99
    assert len(boxes_from_heatmap(make_heatmap(prob))) == 3
    df = boxes_from_heatmap(make_heatmap(prob), min_neighbours=1)
    assert len(df) == 2 and df.score.max() == pytest.approx(0.95)


def test_diagonal_tiles_are_one_component() -> None:
    prob = np.zeros((5, 5))
    prob[[1, 2, 3], [1, 2, 3]] = 0.9
    assert len(boxes_from_heatmap(make_heatmap(prob))) == 1
    assert len(boxes_from_heatmap(make_heatmap(prob), method="dbscan", eps_tiles=1.0)) == 3


def test_dbscan_equals_components_on_separated_blobs() -> None:
    hm = make_heatmap(two_blobs())
    comp = boxes_from_heatmap(hm)
    db = boxes_from_heatmap(hm, method="dbscan", eps_tiles=1.5, min_samples=1)
    pd.testing.assert_frame_equal(comp, db)


def test_score_modes() -> None:
    hm = make_heatmap(two_blobs())
    mean = boxes_from_heatmap(hm, score="mean")
    assert mean.score.tolist() == pytest.approx([0.9, (14 * 0.7 + 0.95) / 15])
    aw = boxes_from_heatmap(hm, score="area_weighted")
    expected = [0.9 * np.sqrt(12), (14 * 0.7 + 0.95) / 15 * np.sqrt(15)]
    assert aw.score.tolist() == pytest.approx(expected)
    assert aw.n_tiles.tolist() == [12, 15]
    with pytest.raises(ValueError, match="max"):
        boxes_from_heatmap(hm, score="median")


def test_unknown_method_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"components.*dbscan"):
        boxes_from_heatmap(make_heatmap(two_blobs()), method="watershed")


def test_top_n_keeps_best() -> None:
    df = boxes_from_heatmap(make_heatmap(two_blobs()), top_n=1)
    assert len(df) == 1 and df.score.iloc[0] == pytest.approx(0.95)


def test_nms_drops_nested_lower_scored_box() -> None:
    prob = np.zeros((9, 9))
    prob[[0, 8], :] = 0.9
    prob[:, [0, 8]] = 0.9
    prob[3:6, 3:6] = 0.6  # IoU with the frame box = 9 / 81
    hm = make_heatmap(prob)
    assert len(boxes_from_heatmap(hm)) == 2
    assert len(boxes_from_heatmap(hm, nms_iou=0.5)) == 2
    df = boxes_from_heatmap(hm, nms_iou=0.1)
    assert len(df) == 1 and df.score.iloc[0] == pytest.approx(0.9)


def test_min_size_um() -> None:
    prob = two_blobs()
    prob[17, 2] = 0.99  # one tile: 256 px * 0.5 um = 128 um
    hm = make_heatmap(prob)
    df = boxes_from_heatmap(hm, min_size_um=128.0)
    assert len(df) == 3
    df = boxes_from_heatmap(hm, min_size_um=200.0)
    assert len(df) == 2 and (df.x2 - df.x1).min() * 0.5 >= 200


def test_boxes_to_digilut_layout() -> None:
    df = pd.DataFrame({"x1": [10.4], "y1": [20.6], "x2": [30.0], "y2": [40.0], "score": [0.5]})
    out = boxes_to_digilut(df, "a.tif")
    assert list(out.columns) == ["filename", "x1", "x2", "y1", "y2"]
    assert out.iloc[0].tolist() == ["a.tif", 10, 30, 21, 40]
    assert all(out[c].dtype == np.int64 for c in ["x1", "x2", "y1", "y2"])
    assert len(boxes_to_digilut(df.iloc[:0], "a.tif")) == 0


@st.composite
def grid_boxes(draw: st.DrawFn) -> list[tuple[int, int, int, int]]:
    """Boxes in tile units, one per 8x8 slot, never touching (even diagonally)."""
    slots = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), unique=True, max_size=6))
    boxes = []
    for sr, sc in slots:
        r0, c0 = sr * 8 + draw(st.integers(0, 1)), sc * 8 + draw(st.integers(0, 1))
        h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        boxes.append((c0, r0, c0 + w, r0 + h))
    return boxes


@settings(max_examples=40, deadline=None)
@given(grid_boxes(), st.sampled_from(["components", "dbscan"]))
def test_oracle_heatmap_from_boxes_scores_perfect_f2(
    boxes: list[tuple[int, int, int, int]], method: str
) -> None:
    prob = np.full((32, 32), 0.05)
    for c1, r1, c2, r2 in boxes:
        prob[r1:r2, c1:c2] = 0.9
    df = boxes_from_heatmap(make_heatmap(prob), method=method)
    gt = np.array(
        [
            [OX + c1 * TILE, OY + r1 * TILE, OX + c2 * TILE, OY + r2 * TILE]
            for c1, r1, c2, r2 in boxes
        ]
    )
    pred = df[["x1", "y1", "x2", "y2"]].to_numpy()
    assert slide_fbeta(pred, df.score.to_numpy(), gt.reshape(-1, 4))["f2"] == 1.0
    assert sorted(map(tuple, pred)) == sorted(map(tuple, gt.reshape(-1, 4)))


def test_overlapping_tiles_give_the_box_of_their_centre_cells() -> None:
    # 256-px tiles every 128 px: a run of 3x2 positive tiles covers the centre cells only.
    prob = np.zeros((10, 10))
    prob[2:4, 4:7] = 0.9
    heatmap = Heatmap("s1", prob, 0.0, 0.0, 128.0, 256.0, 0.5, 0, 10_000, 10_000)
    df = boxes_from_heatmap(heatmap, min_size_um=0.0)
    assert df[["x1", "y1", "x2", "y2"]].iloc[0].tolist() == [4 * 128 + 64, 2 * 128 + 64,
                                                             7 * 128 + 64, 4 * 128 + 64]  # fmt: skip


def five_fragments_of_two_lesions() -> np.ndarray:
    """Lesion A (rows 2-9, cols 2-11) in 3 fragments, lesion B (rows 20-27, cols 30-37) in 2."""
    prob = np.full((32, 44), 0.05)
    prob[2:5, 2:5] = prob[2:5, 7:11] = prob[7:10, 3:12] = 0.9  # A: gaps of 2 cells
    prob[20:23, 30:38] = prob[25:28, 30:38] = 0.8  # B: a gap of 2 rows
    return prob


def test_merge_to_n_joins_fragments_of_each_lesion() -> None:
    heat = make_heatmap(five_fragments_of_two_lesions())
    assert len(boxes_from_heatmap(heat, method="components", min_size_um=0)) == 5
    df = boxes_from_heatmap(heat, method="merge", top_n=2, min_size_um=0)
    assert len(df) == 2
    got = sorted((round((r.y1 - OY) / TILE), round((r.x1 - OX) / TILE),
                  round((r.y2 - OY) / TILE), round((r.x2 - OX) / TILE)) for r in df.itertuples())  # fmt: skip
    assert got == [(2, 2, 10, 12), (20, 30, 28, 38)]  # each box covers its whole lesion
    assert sorted(df.n_tiles) == [2 * 24, 9 + 12 + 27]


def test_merge_without_a_count_is_components() -> None:
    heat = make_heatmap(five_fragments_of_two_lesions())
    merged = boxes_from_heatmap(heat, method="merge", min_size_um=0)
    pd.testing.assert_frame_equal(merged, boxes_from_heatmap(heat, min_size_um=0))
