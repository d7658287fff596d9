"""GeoJSON export for QuPath."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import shapely

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
    assert p["properties"]["measurements"] == {"score": 0.7}
    assert feats[names.index("Ground truth")]["properties"]["measurements"] == {}
    ring = p["geometry"]["coordinates"][0]
    assert p["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 5
    assert {tuple(c) for c in ring} == {(1, 2), (11, 2), (11, 22), (1, 22)}
    color = p["properties"]["classification"]["color"]
    assert len(color) == 3 and all(isinstance(c, int) for c in color)


def test_features_have_names_and_qupath_measurements() -> None:
    # QuPath shows a feature's numbers from properties.measurements, a name-to-number object
    pred = pd.DataFrame(
        {"x1": [0.0, 100.0], "y1": [0.0, 0.0], "x2": [40.0, 120.0], "y2": [10.0, 20.0],
         "score": [0.9, 0.6], "mean_prob": [0.7, 0.55], "max_prob": [0.9, 0.6],
         "n_tiles": [3, 1], "area_um2": [100.0, 25.0]}
    )  # fmt: skip
    gt = pd.DataFrame({"x1": [0], "y1": [0], "x2": [20], "y2": [20]})
    contour = shapely.box(0, 0, 10, 30)
    feats = json.loads(json.dumps(boxes_geojson(pred, gt, [contour], mpp=0.5)))["features"]
    props = [f["properties"] for f in feats]
    assert [p["name"] for p in props] == [
        "Ground truth 1", "Predicted lesion 1", "Predicted lesion 2", "Heatmap contour 1"
    ]  # fmt: skip
    for p in props:
        m = p["measurements"]
        assert isinstance(m, dict) and all(isinstance(v, float) for v in m.values()), m
        assert not {"score", "mean_prob", "max_prob", "n_tiles", "area_um2"} & set(p) - {"name"}
    assert props[0]["measurements"] == {"area_um2": 100.0}  # 20 x 20 px at 0.5 um/px
    assert props[1]["measurements"] == {
        "score": 0.9, "mean_prob": 0.7, "max_prob": 0.9, "n_tiles": 3.0, "area_um2": 100.0
    }  # fmt: skip
    assert props[2]["measurements"]["score"] == 0.6
    assert props[3]["measurements"] == {"area_um2": 75.0}
    no_mpp = boxes_geojson(None, gt)["features"][0]["properties"]
    assert no_mpp["measurements"] == {} and no_mpp["name"] == "Ground truth 1"


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
