"""GeoJSON export for QuPath."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from histodetect.detection.geojson import boxes_geojson, heatmap_contours, write_geojson
from histodetect.detection.heatmap import Heatmap


def hm(prob: np.ndarray) -> Heatmap:
    return Heatmap("s", prob, 10.0, 20.0, 100.0, 100.0, 0.25, 0, 10_000, 10_000)


def test_boxes_geojson_structure() -> None:
    pred = pd.DataFrame({"x1": [1.0], "y1": [2.0], "x2": [11.0], "y2": [22.0], "score": [0.7]})
    gt = pd.DataFrame({"x1": [0], "y1": [0], "x2": [5], "y2": [5]})
    obj = boxes_geojson(pred, gt)
    assert obj["type"] == "FeatureCollection"
    feats = json.loads(json.dumps(obj))["features"]
    names = [f["properties"]["classification"]["name"] for f in feats]
    assert sorted(names) == ["Ground truth", "Predicted lesion"]
    p = feats[names.index("Predicted lesion")]
    assert p["properties"]["objectType"] == "annotation"
    assert p["properties"]["score"] == 0.7
    assert "score" not in feats[names.index("Ground truth")]["properties"]
    ring = p["geometry"]["coordinates"][0]
    assert p["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 5
    assert {tuple(c) for c in ring} == {(1, 2), (11, 2), (11, 22), (1, 22)}
    color = p["properties"]["classification"]["color"]
    assert len(color) == 3 and all(isinstance(c, int) for c in color)


def test_heatmap_contours_union_and_simplified() -> None:
    prob = np.full((5, 5), np.nan)
    prob[0, 0] = prob[0, 1] = prob[1, 0] = 0.9  # L shape
    prob[4, 4] = 0.6
    prob[3, 3] = 0.4
    polys = sorted(heatmap_contours(hm(prob), level=0.5), key=lambda p: -p.area)
    assert len(polys) == 2
    assert polys[0].area == pytest.approx(3 * 100 * 100)
    assert len(polys[0].exterior.coords) == 7  # 6 corners, collinear vertices removed
    assert polys[1].bounds == (410.0, 420.0, 510.0, 520.0)
    assert heatmap_contours(hm(np.full((2, 2), 0.1))) == []
    feats = boxes_geojson(None, contours=polys)["features"]
    assert [f["properties"]["classification"]["name"] for f in feats] == ["Heatmap contour"] * 2


def test_write_geojson_is_atomic(tmp_path) -> None:
    obj = boxes_geojson(pd.DataFrame({"x1": [0], "y1": [0], "x2": [1], "y2": [1], "score": [1]}))
    path = tmp_path / "sub" / "s.geojson"
    write_geojson(obj, path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(obj))
    assert [p.name for p in path.parent.iterdir()] == ["s.geojson"]
