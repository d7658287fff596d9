"""Tile labels from box and outline overlap on a hand-made grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from histodetect.annotations.labels import LabelSettings, label_tiles
from histodetect.columns import LABEL_COLUMNS, TILE_COLUMNS
from histodetect.errors import AnnotationError

SIZE = 100


def grid(rows: int = 4, cols: int = 4) -> pd.DataFrame:
    rr, cc = np.indices((rows, cols))
    rr, cc = rr.ravel(), cc.ravel()
    return pd.DataFrame(
        {
            "slide_id": "s",
            "x": cc * SIZE,
            "y": rr * SIZE,
            "size": SIZE,
            "row": rr,
            "col": cc,
            "level": 0,
            "read_px": SIZE,
            "tile_px": 50,
            "tissue": 1.0,
        },
        columns=TILE_COLUMNS,
    )


def boxes(*rows: tuple[float, float, float, float]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["x1", "y1", "x2", "y2"], dtype=float)


def at(out: pd.DataFrame, row: int, col: int) -> pd.Series:
    return out[(out.row == row) & (out.col == col)].iloc[0]


def test_coverage_inside_partial_outside() -> None:
    # box covers tiles (0,0),(0,1) fully, and the left 30% of (0,2) and top 30% of (1,0),(1,1)
    out = label_tiles(grid(), boxes((0, 0, 230, 130)), LabelSettings("coverage", 0.5, 0.0))
    assert list(out.columns) == LABEL_COLUMNS
    for rc in [(0, 0), (0, 1)]:
        t = at(out, *rc)
        assert t.coverage == pytest.approx(1.0)
        assert t.label == 1
    for rc, cov in [((0, 2), 0.3), ((1, 0), 0.3), ((1, 1), 0.3), ((1, 2), 0.09)]:
        t = at(out, *rc)
        assert t.coverage == pytest.approx(cov, abs=1e-6)
        assert t.label == -1, rc  # between the thresholds: ignored
    far = out[(out.row >= 2) | (out.col >= 3)]
    assert (far.coverage == 0).all()
    assert (far.label == 0).all()
    assert len(far) == 16 - 6


def test_coverage_with_loose_negative_threshold() -> None:
    out = label_tiles(grid(), boxes((0, 0, 230, 130)), LabelSettings("coverage", 0.5, 0.1))
    assert at(out, 1, 2).label == 0  # 9% <= 10%
    assert at(out, 0, 2).label == -1  # 30% in between
    assert at(out, 0, 0).label == 1


def test_coverage_is_union_of_overlapping_boxes() -> None:
    # two boxes each covering half of tile (0,0), overlapping in a quarter strip
    b = boxes((0, 0, 60, 100), (40, 0, 100, 100))
    out = label_tiles(grid(1, 1), b, LabelSettings("coverage", 0.9, 0.0))
    t = at(out, 0, 0)
    assert t.coverage == pytest.approx(1.0)
    assert t.iou == pytest.approx(0.6)
    assert t.label == 1


def test_iou_mode() -> None:
    # box == tile (0,0): IoU 1; box covers tile (0,1) fully but is 4x its size
    b = boxes((0, 0, 100, 100), (100, 100, 300, 300))
    out = label_tiles(grid(), b, LabelSettings("iou", 0.5, 0.0))
    assert at(out, 0, 0).iou == pytest.approx(1.0)
    assert at(out, 0, 0).label == 1
    t = at(out, 1, 1)
    assert t.coverage == pytest.approx(1.0)
    assert t.iou == pytest.approx(0.25)
    assert t.label == -1  # fully inside, yet ignored under IoU
    assert at(out, 3, 3).label == 0
    # same boxes under coverage: the tile inside the big box is positive
    cov = label_tiles(grid(), b, LabelSettings("coverage", 0.5, 0.0))
    assert at(cov, 1, 1).label == 1


def test_no_boxes_all_negative() -> None:
    out = label_tiles(grid(), boxes(), LabelSettings())
    assert (out.label == 0).all()
    assert (out.iou == 0).all()
    assert (out.coverage == 0).all()
    assert list(out.columns) == LABEL_COLUMNS


def test_equal_thresholds_positive_wins() -> None:
    out = label_tiles(grid(1, 2), boxes((0, 0, 50, 100)), LabelSettings("coverage", 0.5, 0.5))
    assert out.label.tolist() == [1, 0]


def test_output_types_and_input_untouched() -> None:
    tiles = grid()
    tiles["extra"] = 7  # dropped: output is exactly LABEL_COLUMNS
    out = label_tiles(tiles, boxes((0, 0, 100, 100)), LabelSettings())
    assert list(out.columns) == LABEL_COLUMNS
    assert out.label.dtype == np.int64
    assert out.iou.dtype == np.float32
    assert "label" not in tiles.columns
    assert len(out) == len(tiles)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (LabelSettings("dice", 0.5, 0.0), "unknown overlap 'dice'"),
        (LabelSettings("coverage", 0.2, 0.5), "negative <= positive"),
        (LabelSettings("iou", 0.0, 0.1), "negative <= positive"),
    ],
)
def test_settings_validation(settings: LabelSettings, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        label_tiles(grid(), boxes((0, 0, 10, 10)), settings)


# --- outlines, exclusions and classes -------------------------------------------------------


def outlines(*rows: tuple[str, shapely.Geometry]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "slide_id": "s",
            "class_name": [c for c, _ in rows],
            "geometry": [g for _, g in rows],
            "source": "ann.geojson",
            "item": [f"feature {i + 1}" for i in range(len(rows))],
        }
    )


def test_boxes_as_outlines_label_like_boxes() -> None:
    b = boxes((0, 0, 230, 130), (150, 150, 390, 260))
    as_outlines = outlines(*[("lesion", shapely.box(*r)) for r in b.to_numpy()])
    for mode in ("coverage", "iou"):
        settings = LabelSettings(mode, 0.5, 0.05)
        expected = label_tiles(grid(), b, settings)
        got = label_tiles(grid(), as_outlines, settings)
        pd.testing.assert_frame_equal(got, expected)


def test_triangle_coverage_and_labels() -> None:
    # lower-left half of the 2x2 tile block at the origin: diagonal tiles half covered
    tri = shapely.Polygon([(0, 0), (0, 200), (200, 200)])
    out = label_tiles(grid(), outlines(("lesion", tri)), LabelSettings("coverage", 0.6, 0.0))
    assert at(out, 1, 0).coverage == pytest.approx(1.0) and at(out, 1, 0).label == 1
    for rc in [(0, 0), (1, 1)]:
        assert at(out, *rc).coverage == pytest.approx(0.5)
        assert at(out, *rc).label == -1
    assert at(out, 0, 1).coverage == 0.0 and at(out, 0, 1).label == 0
    assert at(out, 1, 0).iou == pytest.approx(100 * 100 / tri.area)


def test_excluded_region_is_cut_out() -> None:
    lesion = shapely.box(0, 0, 200, 200)
    hole = shapely.box(100, 100, 200, 200)
    out = label_tiles(
        grid(), outlines(("lesion", lesion), ("exclude", hole)), LabelSettings("coverage", 0.5)
    )
    assert at(out, 0, 0).label == 1 and at(out, 1, 1).coverage == 0.0
    assert at(out, 1, 1).label == 0


def test_multi_class_labels_and_columns() -> None:
    ann = outlines(
        ("tumour", shapely.box(0, 0, 200, 100)),
        ("dcis", shapely.box(100, 0, 300, 100)),  # overlaps tumour on tile (0, 1)
        ("dcis", shapely.box(0, 300, 100, 340)),  # 40 % of tile (3, 0)
    )
    settings = LabelSettings("coverage", 0.5, 0.0, classes=["tumour", "dcis"])
    out = label_tiles(grid(), ann, settings)
    assert list(out.columns) == [*LABEL_COLUMNS, "class_name", "coverage_tumour", "coverage_dcis"]
    assert at(out, 0, 0).label == 1
    assert at(out, 0, 1).label == 1  # tie: the first class in the list wins
    assert at(out, 0, 2).label == 2
    assert at(out, 3, 0).label == -1 and at(out, 3, 0).coverage_dcis == pytest.approx(0.4)
    assert at(out, 2, 2).label == 0
    assert set(out.label) == {-1, 0, 1, 2}
    names = dict(zip(out.label, out.class_name, strict=True))
    assert names == {-1: "ignored", 0: "background", 1: "tumour", 2: "dcis"}


def test_unknown_class_is_one_line_naming_the_file() -> None:
    ann = outlines(("tumour", shapely.box(0, 0, 10, 10)), ("stroma", shapely.box(0, 0, 9, 9)))
    with pytest.raises(AnnotationError, match=r"ann.geojson: feature 2: class 'stroma' is not"):
        label_tiles(grid(), ann, LabelSettings(classes=["tumour"]))


def test_classes_need_class_names() -> None:
    with pytest.raises(ValueError, match="class names"):
        label_tiles(grid(), boxes((0, 0, 10, 10)), LabelSettings(classes=["tumour"]))
    with pytest.raises(ValueError, match="without 'exclude'"):
        label_tiles(grid(), boxes((0, 0, 10, 10)), LabelSettings(classes=["exclude"]))
