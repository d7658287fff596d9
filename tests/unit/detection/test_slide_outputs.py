"""One slide from heatmap to boxes, GeoJSON and overlay (detect_slide)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fixtures import SLIDE_PX, colour_slide
from PIL import Image

from histodetect.detection.heatmap import Heatmap
from histodetect.detection.slide_outputs import detect_slide, expected_count
from histodetect.errors import InputError

CFG = {"method": "components", "threshold": 0.5, "min_neighbours": 0, "min_size_um": 0.0}


def run(tmp_path: Path, cfg: dict, expected: int | None = None) -> tuple[pd.DataFrame, Path]:
    slide, _ = colour_slide(tmp_path / "slide.tiff")
    prob = np.full((16, 16), 0.1, np.float32)
    prob[1:3, 1:3] = 0.9  # box (64, 64)-(192, 192), score 0.9
    prob[8:12, 8:10] = 0.6  # box (512, 512)-(640, 768), score 0.6
    Heatmap("slide", prob, 0, 0, 64, 64, 0.5, 0, SLIDE_PX, SLIDE_PX).save(tmp_path / "h.npz")
    truth = pd.DataFrame({"slide_id": ["slide"], "x1": [64.0], "y1": [64.0], "x2": [192.0], "y2": [192.0]})  # fmt: skip
    out = {k: tmp_path / f"out.{k}" for k in ("csv", "geojson", "png")}
    boxes = detect_slide(
        tmp_path / "h.npz", slide, truth, cfg, out_boxes=out["csv"], out_geojson=out["geojson"],
        out_overlay=out["png"], expected=expected,
    )  # fmt: skip
    return boxes, tmp_path


def test_outputs_and_overlay_size(tmp_path: Path) -> None:
    boxes, out = run(tmp_path, {**CFG, "overlay_px": 512})
    assert boxes[["x1", "y1", "x2", "y2"]].values.tolist() == [
        [64, 64, 192, 192], [512, 512, 640, 768]
    ]  # fmt: skip
    assert pd.read_csv(out / "out.csv").slide_id.tolist() == ["slide", "slide"]
    with Image.open(out / "out.png") as png:
        assert png.width == 512  # thumbnail of 512 px on the long side, drawn 1:1
    feats = json.loads((out / "out.geojson").read_text())["features"]
    classes = [f["properties"]["classification"]["name"] for f in feats]
    assert sorted(classes) == ["Ground truth", "Heatmap contour", "Heatmap contour",
                               "Predicted lesion", "Predicted lesion"]  # fmt: skip
    for f in feats:  # QuPath: Feature, geometry, objectType and classification {name, color}
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        assert f["properties"]["objectType"] == "annotation"
        assert len(f["properties"]["classification"]["color"]) == 3


def test_expected_count_replaces_top_n(tmp_path: Path) -> None:
    boxes, _ = run(tmp_path, {**CFG, "top_n": None}, expected=1)
    assert boxes.score.tolist() == [pytest.approx(0.9)]


def test_expected_count_from_the_sheet() -> None:
    sheet = pd.DataFrame({"slide_id": ["a", "b", "c"], "n_lesions": ["2", "", "x"]})
    assert expected_count(sheet, "a") == 2
    assert expected_count(sheet, "b") is None
    assert expected_count(sheet.drop(columns="n_lesions"), "a") is None
    with pytest.raises(InputError, match=r"samples\.tsv: slide c: n_lesions=.x. is not a count"):
        expected_count(sheet, "c", "samples.tsv")
