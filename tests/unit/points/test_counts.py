"""Counts of points per slide, per mm2 of tissue and in the hotspot window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histodetect.detection.heatmap import Heatmap
from histodetect.errors import InputError
from histodetect.points.counts import count_row, densest_square, hotspot, window_side_px
from histodetect.points.detect import (
    points_from_heatmap,
    tuned_point_settings,
    write_slide_points,
)

MPP = 0.25  # 2 mm2 is a square of 1414.2 um = 5656.9 px


def scattered_with_cluster(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """40 points spread over a 40000 px slide, 12 more inside a 2000 px square at (30000, 8000)."""
    spread = rng.uniform(0, 40000, size=(40, 2))
    spread = spread[np.hypot(*(spread - [31000, 9000]).T) > 9000]  # none near the cluster
    cluster = rng.uniform([30000, 8000], [32000, 10000], size=(12, 2))
    return np.vstack([spread, cluster]), cluster


def test_the_window_area_is_hotspot_mm2_at_the_slide_mpp() -> None:
    side = window_side_px(2.0, MPP)
    assert (side * MPP / 1000) ** 2 == pytest.approx(2.0)
    assert window_side_px(2.0, 0.5) == pytest.approx(side / 2)
    spot = hotspot(np.zeros((0, 2)), mpp=MPP, area_mm2=2.0, width=40000, height=30000)
    assert ((spot.x2 - spot.x1) * MPP / 1000) * ((spot.y2 - spot.y1) * MPP / 1000) == (
        pytest.approx(2.0)
    )
    assert spot.count == 0 and spot.kind == "window"


def test_hotspot_finds_the_dense_cluster() -> None:
    xy, cluster = scattered_with_cluster(np.random.default_rng(4))
    spot = hotspot(xy, mpp=MPP, area_mm2=2.0, width=40000, height=40000)
    assert spot.kind == "window"
    assert spot.count == 12
    inside = (
        (xy[:, 0] >= spot.x1)
        & (xy[:, 0] <= spot.x2)
        & (xy[:, 1] >= spot.y1)
        & (xy[:, 1] <= spot.y2)
    )
    assert inside.sum() == 12
    assert (spot.x1 <= cluster[:, 0]).all() and (cluster[:, 0] <= spot.x2).all()
    assert (spot.y1 <= cluster[:, 1]).all() and (cluster[:, 1] <= spot.y2).all()
    # centred on its points
    assert (spot.x1 + spot.x2) / 2 == pytest.approx((cluster[:, 0].min() + cluster[:, 0].max()) / 2)
    assert spot.area_mm2 == 2.0
    assert (spot.x2 - spot.x1) == pytest.approx(window_side_px(2.0, MPP))


def test_densest_square_is_exact_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 30, size=(25, 2)).astype(float)
    count, mask = densest_square(xy, 7.0)
    grid = np.arange(-8, 31, 0.5)
    brute = max(
        int(((xy[:, 0] >= x) & (xy[:, 0] <= x + 7) & (xy[:, 1] >= y) & (xy[:, 1] <= y + 7)).sum())
        for x in grid
        for y in grid
    )
    assert count == brute == mask.sum()


def test_window_stays_inside_the_slide() -> None:
    xy = np.array([[10.0, 10.0], [20.0, 30.0]])
    spot = hotspot(xy, mpp=MPP, area_mm2=2.0, width=8000, height=9000)
    assert spot.count == 2 and spot.x1 == 0.0 and spot.y1 == 0.0
    assert spot.x2 == pytest.approx(window_side_px(2.0, MPP))


def test_a_field_smaller_than_the_window_counts_the_field() -> None:
    xy = np.array([[10.0, 10.0], [1500.0, 1900.0], [400.0, 400.0]])
    spot = hotspot(xy, mpp=MPP, area_mm2=2.0, width=2000, height=2000)  # 0.25 mm2
    assert spot.kind == "field" and spot.count == 3
    assert (spot.x1, spot.y1, spot.x2, spot.y2) == (0.0, 0.0, 2000.0, 2000.0)
    assert spot.area_mm2 == pytest.approx(0.25)


def test_count_row_per_mm2_of_tissue() -> None:
    summary = {"mpp": MPP, "width": 40000, "height": 40000, "tissue_mm2": 8.0}
    xy, _ = scattered_with_cluster(np.random.default_rng(4))
    row, spot = count_row("s", xy, summary, 2.0)
    assert row["n_points"] == len(xy) and row["points_per_mm2"] == pytest.approx(len(xy) / 8.0)
    assert row["hotspot_count"] == spot.count == 12
    empty, _ = count_row("s", xy, {**summary, "tissue_mm2": 0.0}, 2.0)
    assert empty["points_per_mm2"] is None


def heatmap() -> Heatmap:
    prob = np.zeros((20, 20))
    prob[3, 3], prob[10, 12], prob[16, 5] = 0.9, 0.55, 0.3
    prob[10, 13] = 0.5  # a plateau neighbour of the 0.55 peak
    return Heatmap("t1", prob, 0.0, 0.0, 10.0, 40.0, MPP, 0, 220, 220)


def test_slide_points_use_the_tuned_method_and_threshold(tmp_path: Path) -> None:
    heatmap().save(tmp_path / "t1.npz")
    (tmp_path / "t1.json").write_text(
        json.dumps({"slide_id": "t1", "mpp": MPP, "width": 220, "height": 220, "tissue_mm2": 0.003})
    )
    tuned = tmp_path / "points.json"
    tuned.write_text(
        json.dumps({"settings": {"method": "maxima", "min_distance_um": 4.0, "threshold": 0.5}})
    )
    cfg = {"method": "components", "min_distance_um": 8.0, "min_score": 0.05, "hotspot_mm2": 2.0}
    settings = tuned_point_settings(cfg, tuned)
    assert (settings["method"], settings["min_score"]) == ("maxima", 0.5)
    points, row = write_slide_points(
        tmp_path / "t1.npz", tmp_path / "t1.json", settings,
        out_csv=tmp_path / "p.csv", out_geojson=tmp_path / "p.geojson",
        out_counts=tmp_path / "c.tsv",
    )  # fmt: skip
    written = pd.read_csv(tmp_path / "p.csv")
    assert written.score.to_numpy() == pytest.approx([0.9, 0.55])  # 0.3: under the threshold
    expected = points_from_heatmap(heatmap(), 0.5, method="maxima", min_distance_um=4.0)
    assert np.allclose(written[["x", "y"]], expected[["x", "y"]])
    assert row["n_points"] == len(points) == 2 and row["hotspot_kind"] == "field"
    feats = json.loads((tmp_path / "p.geojson").read_text())["features"]
    assert [f["geometry"]["type"] for f in feats] == ["Point", "Point", "Polygon"]
    assert feats[-1]["properties"]["measurements"]["count"] == 2.0
    counts = pd.read_csv(tmp_path / "c.tsv", sep="\t")
    assert counts.hotspot_count.tolist() == [2]
    tuned.write_text(json.dumps({"settings": {"method": "maxima"}}))
    with pytest.raises(InputError, match=r"points\.json: not a point tuning record"):
        tuned_point_settings(cfg, tuned)
