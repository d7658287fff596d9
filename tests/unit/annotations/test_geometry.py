"""Box and polygon geometry against brute-force pixel counts."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from histodetect.annotations.geometry import (
    box_area,
    box_giou,
    box_iou,
    tile_box_overlap,
    tile_geometry_overlap,
)

GRID = 24


@st.composite
def int_box(draw: st.DrawFn) -> tuple[int, int, int, int]:
    x1 = draw(st.integers(0, GRID - 2))
    y1 = draw(st.integers(0, GRID - 2))
    x2 = draw(st.integers(x1 + 1, GRID))
    y2 = draw(st.integers(y1 + 1, GRID))
    return (x1, y1, x2, y2)


def mask(box: tuple[int, ...]) -> np.ndarray:
    m = np.zeros((GRID, GRID), dtype=bool)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = True
    return m


@settings(max_examples=150, deadline=None)
@given(int_box(), int_box())
def test_iou_giou_match_pixel_counts(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    ma, mb = mask(a), mask(b)
    inter = (ma & mb).sum()
    union = (ma | mb).sum()
    hull_box = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
    hull = mask(hull_box).sum()
    iou = inter / union
    giou = iou - (hull - union) / hull
    assert box_iou([a], [b])[0, 0] == pytest.approx(iou, abs=1e-12)
    assert box_giou([a], [b])[0, 0] == pytest.approx(giou, abs=1e-12)
    assert box_area([a])[0] == ma.sum()


@settings(max_examples=60, deadline=None)
@given(st.lists(int_box(), min_size=1, max_size=6), st.lists(int_box(), min_size=1, max_size=6))
def test_symmetry_and_bounds(a: list[tuple[int, ...]], b: list[tuple[int, ...]]) -> None:
    iou, giou = box_iou(a, b), box_giou(a, b)
    assert iou.shape == (len(a), len(b))
    np.testing.assert_allclose(iou, box_iou(b, a).T)
    np.testing.assert_allclose(giou, box_giou(b, a).T)
    assert np.all((iou >= 0) & (iou <= 1 + 1e-12))
    assert np.all((giou >= -1 - 1e-12) & (giou <= iou + 1e-12))
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0)


def test_giou_far_apart_tends_to_minus_one() -> None:
    g = box_giou([[0, 0, 1, 1]], [[1000, 1000, 1001, 1001]])[0, 0]
    assert -1 < g < -0.99
    assert box_giou([[0, 0, 2, 2]], [[2, 0, 4, 2]])[0, 0] == pytest.approx(0.0)


@settings(max_examples=150, deadline=None)
@given(st.lists(int_box(), min_size=1, max_size=6), st.lists(int_box(), max_size=5))
def test_tile_overlap_matches_pixel_union(
    tiles: list[tuple[int, ...]], boxes: list[tuple[int, ...]]
) -> None:
    iou_max, coverage = tile_box_overlap(tiles, boxes)
    union = np.zeros((GRID, GRID), dtype=bool)
    for b in boxes:
        union |= mask(b)
    for i, t in enumerate(tiles):
        mt = mask(t)
        assert coverage[i] == pytest.approx((mt & union).sum() / mt.sum(), abs=1e-12)
        best = max(((mt & mask(b)).sum() / (mt | mask(b)).sum() for b in boxes), default=0.0)
        assert iou_max[i] == pytest.approx(best, abs=1e-12)


def test_tile_overlap_float_boxes_match_shapely() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(40, 2))
    boxes = np.c_[xy, xy + rng.uniform(1, 40, size=(40, 2))]
    txy = rng.uniform(-10, 130, size=(300, 2))
    tiles = np.c_[txy, txy + 7.3]
    _, coverage = tile_box_overlap(tiles, boxes, chunk=64)
    union = shapely.union_all(shapely.box(*boxes.T))
    tile_polys = shapely.box(*tiles.T)
    expected = shapely.area(shapely.intersection(tile_polys, union)) / shapely.area(tile_polys)
    np.testing.assert_allclose(coverage, expected, atol=1e-9)
    assert coverage.max() == pytest.approx(1.0) and coverage.min() == 0.0


def test_zero_boxes_and_zero_tiles() -> None:
    iou_max, coverage = tile_box_overlap([[0, 0, 10, 10], [5, 5, 9, 9]], np.zeros((0, 4)))
    assert iou_max.tolist() == [0.0, 0.0] and coverage.tolist() == [0.0, 0.0]
    iou_max, coverage = tile_box_overlap(np.zeros((0, 4)), [[0, 0, 1, 1]])
    assert iou_max.shape == coverage.shape == (0,)
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    with pytest.raises(ValueError, match="shape"):
        box_iou([[0, 0, 1]], [[0, 0, 1, 1]])


def test_tile_overlap_of_a_whole_slide_sums_to_the_union_of_boxes() -> None:
    rng = np.random.default_rng(1)
    g = np.arange(0, 320 * 256, 256, dtype=np.float64)
    gx, gy = np.meshgrid(g, g[:313])
    tiles = np.c_[gx.ravel(), gy.ravel(), gx.ravel() + 256, gy.ravel() + 256]
    assert len(tiles) > 100_000
    xy = rng.uniform(0, 70_000, size=(50, 2))
    boxes = np.c_[xy, xy + rng.uniform(500, 8000, size=(50, 2))]
    iou_max, coverage = tile_box_overlap(tiles, boxes)
    # Total covered area equals the area of the union of boxes (tiles partition the plane).
    union_area = shapely.union_all(shapely.box(*boxes.T)).area
    assert (coverage * 256 * 256).sum() == pytest.approx(union_area, rel=1e-9)
    assert iou_max.max() <= 1.0


# --- tiles against polygons -----------------------------------------------------------------


@st.composite
def int_triangle(draw: st.DrawFn) -> shapely.Polygon:
    pts = draw(
        st.lists(st.tuples(st.integers(0, GRID), st.integers(0, GRID)), min_size=3, max_size=3)
    )
    poly = shapely.Polygon(pts)
    assume(poly.area >= 1)
    return poly


def sample_mask(geom: shapely.Geometry, per_px: int = 8) -> np.ndarray:
    """Sub-pixel samples (``per_px`` per pixel side) inside ``geom``: shape ``(GRID*k, GRID*k)``."""
    c = (np.arange(GRID * per_px) + 0.5) / per_px
    gx, gy = np.meshgrid(c, c)
    return shapely.contains_xy(geom, gx, gy)


@settings(max_examples=80, deadline=None)
@given(st.lists(int_box(), min_size=1, max_size=6), st.lists(int_box(), min_size=1, max_size=5))
def test_polygon_overlap_of_boxes_matches_pixel_union(
    tiles: list[tuple[int, ...]], boxes: list[tuple[int, ...]]
) -> None:
    """Boxes given as polygons: the polygon path agrees with the pixel count exactly."""
    geoms = list(shapely.box(*np.asarray(boxes, float).T))
    iou_max, coverage = tile_geometry_overlap(tiles, geoms)
    union = np.zeros((GRID, GRID), dtype=bool)
    for b in boxes:
        union |= mask(b)
    for i, t in enumerate(tiles):
        mt = mask(t)
        assert coverage[i] == pytest.approx((mt & union).sum() / mt.sum(), abs=1e-12)
        best = max((mt & mask(b)).sum() / (mt | mask(b)).sum() for b in boxes)
        assert iou_max[i] == pytest.approx(best, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(int_box(), min_size=1, max_size=5), st.lists(int_triangle(), min_size=1, max_size=3)
)
def test_polygon_coverage_matches_subpixel_count(
    tiles: list[tuple[int, ...]], triangles: list[shapely.Polygon]
) -> None:
    """Coverage of tiles by overlapping triangles against a brute-force count at 1/8 px.

    Sampling error per tile is at most the outline length inside it times the sample step.
    """
    k = 8
    iou_max, coverage = tile_geometry_overlap(tiles, triangles)
    inside = sample_mask(shapely.union_all(triangles), k)
    outline = sum(t.length for t in triangles)
    for i, (x1, y1, x2, y2) in enumerate(tiles):
        area = (x2 - x1) * (y2 - y1)
        counted = inside[y1 * k : y2 * k, x1 * k : x2 * k].sum() / k**2
        assert coverage[i] * area == pytest.approx(counted, abs=outline / k + 1e-9)
        assert 0 <= iou_max[i] <= coverage[i] + 1e-12


def test_polygon_overlap_of_a_whole_slide_sums_to_the_area() -> None:
    g = np.arange(0, 200 * 64, 64, dtype=np.float64)
    gx, gy = np.meshgrid(g, g)
    tiles = np.c_[gx.ravel(), gy.ravel(), gx.ravel() + 64, gy.ravel() + 64]
    blob = shapely.Point(6000, 5000).buffer(2500, quad_segs=64)
    ring = shapely.Point(9000, 9000).buffer(1500).difference(shapely.Point(9000, 9000).buffer(700))
    iou_max, coverage = tile_geometry_overlap(tiles, [blob, ring])
    assert (coverage * 64 * 64).sum() == pytest.approx(blob.area + ring.area, rel=1e-9)
    assert (
        coverage[
            np.flatnonzero(shapely.contains_xy(blob, tiles[:, 0] + 32, tiles[:, 1] + 32))
        ].min()
        > 0
    )
    hole_tile = int(np.flatnonzero((tiles[:, 0] == 8960) & (tiles[:, 1] == 8960))[0])
    assert coverage[hole_tile] == 0.0 and iou_max[hole_tile] == 0.0
    assert tile_geometry_overlap(tiles[:3], [])[1].tolist() == [0.0, 0.0, 0.0]
