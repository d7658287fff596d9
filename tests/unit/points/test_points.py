"""Point detections from heatmaps: local maxima with a minimum distance, component centres."""

from __future__ import annotations

import numpy as np
import pytest

from histodetect.detection.geojson import points_geojson
from histodetect.detection.heatmap import Heatmap
from histodetect.points.detect import points_from_heatmap


def heatmap(prob: np.ndarray) -> Heatmap:
    # cells every 10 px, tiles 40 px, 1 um/px: cell (r, c) is centred at (10 c + 20, 10 r + 20)
    return Heatmap("s", prob, 0.0, 0.0, 10.0, 40.0, 1.0, 0, 200, 200)


def two_blobs() -> np.ndarray:
    prob = np.zeros((12, 12))
    prob[3, 3], prob[3, 4] = 0.9, 0.9  # a plateau: one detection, pulled towards both cells
    prob[2:5, 2:6][prob[2:5, 2:6] == 0] = 0.3
    prob[9, 9], prob[9, 10] = 0.7, 0.6
    prob[0, 11] = np.nan
    return prob


def test_maxima_one_point_per_blob_at_the_weighted_centre() -> None:
    points = points_from_heatmap(heatmap(two_blobs()), 0.5, min_distance_um=15.0)
    assert points.score.tolist() == [0.9, 0.7]
    assert 10 * 3 + 20 < points.x[0] < 10 * 3.5 + 20  # (3, 3) first, weighed with (3, 4)
    assert points.y[0] == pytest.approx(10 * 3 + 20)
    assert 10 * 9 + 20 < points.x[1] < 10 * 10 + 20  # pulled towards the 0.6 cell


def test_min_distance_and_threshold() -> None:
    prob = np.zeros((12, 12))
    prob[3, 3], prob[3, 6] = 0.9, 0.8  # 30 px apart
    assert len(points_from_heatmap(heatmap(prob), 0.5, min_distance_um=20.0)) == 2
    assert len(points_from_heatmap(heatmap(prob), 0.5, min_distance_um=40.0)) == 1
    assert len(points_from_heatmap(heatmap(prob), 0.85, min_distance_um=20.0)) == 1
    assert points_from_heatmap(heatmap(np.zeros((4, 4))), 0.5).empty


def test_components_centres() -> None:
    points = points_from_heatmap(heatmap(two_blobs()), 0.5, method="components")
    assert len(points) == 2 and points.score.tolist() == [0.9, 0.7]
    assert points.x[0] == pytest.approx(55.0) and points.y[0] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="point method"):
        points_from_heatmap(heatmap(two_blobs()), method="peaks")


def test_points_geojson_for_qupath() -> None:
    points = points_from_heatmap(heatmap(two_blobs()), 0.5)
    feats = points_geojson(points)["features"]
    assert [f["geometry"]["type"] for f in feats] == ["Point", "Point"]
    assert feats[0]["geometry"]["coordinates"] == [points.x[0], points.y[0]]
    assert feats[0]["properties"]["measurements"] == {"score": 0.9}
    assert feats[1]["properties"]["name"] == "Predicted point 2"
