"""Real case: Camelyon16 tumor_001 (level 5) and its two expert outlines.

An oracle heatmap rasterised from the outlines onto a tile grid goes through
``boxes_from_heatmap`` (both methods), the overlay/GeoJSON step and ``evaluate``: the boxes
must be the outlines' bounding boxes at GIoU > 0.5, so DigiLut F2, AP50 and FROC are all 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image

from histodetect.annotations.geometry import box_giou
from histodetect.annotations.labels import LabelSettings, label_tiles
from histodetect.columns import TILE_COLUMNS
from histodetect.detection.heatmap import Heatmap
from histodetect.detection.slide_outputs import detect_slide
from histodetect.evaluation.cohort import evaluate_cohort

DOWNSAMPLE = 32  # the outlines are in level-0 px of the full slide; the file is level 5
MPP = 0.243 * DOWNSAMPLE  # the TIFF has no mpp tag (data README)
TILE = 8  # px of the level-5 file, about 62 um


def read_ncrf_outlines(path: Path, scale: float) -> list[shapely.Polygon]:
    """Positive outlines of an NCRF JSON file, coordinates multiplied by ``scale``."""
    data = json.loads(path.read_text())
    return [shapely.Polygon(np.asarray(p["vertices"], float) * scale) for p in data["positive"]]


def oracle_heatmap(outlines: list[shapely.Polygon], width: int, height: int) -> Heatmap:
    """1 on every tile an outline touches (8-connected per outline), 0 elsewhere."""
    rows, cols = height // TILE, width // TILE
    rr, cc = np.indices((rows, cols)).reshape(2, -1)
    tiles = shapely.box(cc * TILE, rr * TILE, (cc + 1) * TILE, (rr + 1) * TILE)
    hit = np.zeros(len(tiles), bool)
    for outline in outlines:
        hit |= shapely.intersects(tiles, outline)
    prob = hit.reshape(rows, cols).astype(np.float32)
    return Heatmap("tumor_001", prob, 0.0, 0.0, TILE, TILE, MPP, 0, width, height)


@pytest.mark.parametrize("method", ["components", "dbscan"])
def test_oracle_heatmap_scores_perfect_f2(
    tmp_path: Path, method: str, camelyon_tif: Path, camelyon_json: Path
) -> None:
    outlines = read_ncrf_outlines(camelyon_json, 1 / DOWNSAMPLE)
    assert len(outlines) == 2
    bounds = shapely.bounds(np.asarray(outlines, dtype=object))
    truth = pd.DataFrame(bounds, columns=["x1", "y1", "x2", "y2"]).assign(slide_id="tumor_001")
    heatmap = oracle_heatmap(outlines, 3072, 7168)
    heatmap.save(tmp_path / "tumor_001.npz")
    (tmp_path / "boxes").mkdir()
    cfg = {"method": method, "threshold": 0.5, "min_neighbours": 0, "min_size_um": 200.0,
           "eps_tiles": 1.5, "min_samples": 1, "overlay_px": 1200}  # fmt: skip
    boxes = detect_slide(
        tmp_path / "tumor_001.npz", camelyon_tif, truth, cfg, out_boxes=tmp_path / "boxes" / "tumor_001.csv",
        out_geojson=tmp_path / "tumor_001.geojson", out_overlay=tmp_path / "overlay.png",
    )  # fmt: skip
    assert len(boxes) == 2
    giou = box_giou(boxes[["x1", "y1", "x2", "y2"]].to_numpy(), bounds)
    assert (giou.max(axis=1) > 0.5).all() and (giou.max(axis=0) > 0.5).all()
    with Image.open(tmp_path / "overlay.png") as png:  # 1200 px long side: tall slide
        assert png.height >= 1200 and png.width >= 500

    # Tile labels from the outlines by the workflow's own rule (coverage >= 0.5 positive, none
    # negative, between ignored), independent of the heatmap: a label step, a score table or a
    # merge that misplaces tiles (scale, x/y order) costs patch AUC and recall.
    rr, cc = np.nonzero(np.isfinite(heatmap.prob))
    tiles = pd.DataFrame({"slide_id": "tumor_001", "x": cc * TILE, "y": rr * TILE, "size": TILE})
    for col in TILE_COLUMNS:
        if col not in tiles:
            tiles[col] = 0
    annotations = pd.DataFrame({"class_name": "lesion", "geometry": outlines})
    labels = label_tiles(tiles, annotations, LabelSettings(positive=0.5, negative=0.0))
    labels.to_parquet(tmp_path / "labels.parquet")
    tiles.assign(prob=heatmap.prob[rr, cc]).to_parquet(tmp_path / "scores.parquet")
    n_pos, n_neg = int((labels.label == 1).sum()), int((labels.label == 0).sum())
    assert n_pos > 50 and n_neg > 1000
    outputs = SimpleNamespace(**{k: tmp_path / f"{k}.out" for k in
                                 ("metrics", "per_slide", "table", "submission", "froc", "roc", "slides")})  # fmt: skip
    sheet = pd.DataFrame({"slide_id": ["tumor_001"], "path": [str(camelyon_tif)]})
    summary = evaluate_cohort(
        box_paths=[str(tmp_path / "boxes" / "tumor_001.csv")],
        score_paths=[str(tmp_path / "scores.parquet")],
        label_paths=[str(tmp_path / "labels.parquet")],
        truth=truth, sheet=sheet, giou=0.5, beta=2.0, outputs=outputs,
        mpps={"tumor_001": MPP},
    )  # fmt: skip
    assert summary["mean_f2"] == 1.0
    assert summary["ap50"] == 1.0 and summary["froc_mean"] == 1.0
    assert summary["patch"]["auc"] == 1.0 and summary["patch"]["recall_at_0.5"] == 1.0
    assert (summary["patch"]["n"], summary["patch"]["n_pos"]) == (n_pos + n_neg, n_pos)
    submission = pd.read_csv(outputs.submission)
    assert submission.filename.tolist() == ["tumor_001_level5.tif"] * 2
    metrics = json.loads(Path(outputs.metrics).read_text())
    assert metrics["mean_f2"] == 1.0
