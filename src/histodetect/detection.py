"""One slide from heatmap to boxes, QuPath GeoJSON and an overlay picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from histodetect.export import boxes_geojson, heatmap_contours, write_geojson
from histodetect.heatmap import Heatmap
from histodetect.io import atomic_path
from histodetect.plotting import overlay_png
from histodetect.postprocess import boxes_from_heatmap
from histodetect.slide import open_slide, read_thumbnail


def detect_slide(
    heatmap_path: str | Path,
    slide_path: str | Path,
    truth: pd.DataFrame,
    box_cfg: dict[str, Any],
    *,
    thumb_mpp: float,
    out_boxes: str | Path,
    out_geojson: str | Path,
    out_overlay: str | Path,
) -> pd.DataFrame:
    """Boxes of one slide from its heatmap, written as CSV, GeoJSON and overlay PNG.

    The CSV has ``slide_id,x1,y1,x2,y2,score,...`` in level-0 pixels.
    """
    heatmap = Heatmap.load(heatmap_path)
    boxes = boxes_from_heatmap(heatmap, **box_cfg)
    boxes.insert(0, "slide_id", heatmap.slide_id)
    contours = heatmap_contours(heatmap, level=box_cfg.get("threshold", 0.5))
    write_geojson(boxes_geojson(boxes, truth, contours), out_geojson)
    slide = open_slide(slide_path)
    try:
        thumb, ds = read_thumbnail(slide, heatmap.mpp, thumb_mpp)
    finally:
        slide.close()
    overlay_png(
        thumb,
        ds,
        out_overlay,
        heatmap=heatmap,
        pred_boxes=boxes,
        gt_boxes=truth,
        title=f"{heatmap.slide_id}: {len(boxes)} predicted, {len(truth)} true",
    )
    with atomic_path(out_boxes) as tmp:
        boxes.to_csv(tmp, index=False)
    return boxes
