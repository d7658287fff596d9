"""One slide from heatmap to boxes, QuPath GeoJSON and an overlay picture."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from histodetect.detection.boxes import boxes_from_heatmap
from histodetect.detection.geojson import boxes_geojson, heatmap_contours, write_geojson
from histodetect.detection.heatmap import Heatmap
from histodetect.detection.overlay import overlay_png
from histodetect.errors import InputError
from histodetect.io import atomic_path
from histodetect.slides.reader import SlideReader
from histodetect.slides.slide import THUMB_CACHE_BYTES, read_thumbnail
from histodetect.slides.threads import reading_threads

log = logging.getLogger(__name__)
OVERLAY_PX = 1200
"""Default long side of the overlay thumbnail, in pixels."""
EXPECTED_COLUMN = "n_lesions"
"""Optional sample-sheet column: the number of lesions expected on a slide (its ``top_n``)."""


CONFIG_ONLY = ("tune", "tune_grid")
"""Keys of the ``boxes`` config that steer tuning and are not box settings."""


def box_settings(boxes_cfg: dict[str, Any], tuned: str | Path | None = None) -> dict[str, Any]:
    """The box step's settings: the config's, with the out-of-fold tuned values over them.

    ``tuned`` is a ``tuning/boxes.json`` written by the tuning rule (its ``settings``).
    """
    cfg = {k: v for k, v in boxes_cfg.items() if k not in CONFIG_ONLY}
    if tuned:
        record = json.loads(Path(tuned).read_text())
        cfg |= record["settings"]
        log.info("box settings tuned out of fold (%s): %s", tuned, record["settings"])
    return cfg


def expected_count(
    sheet: pd.DataFrame, slide_id: str, source: str | Path = "sample sheet"
) -> int | None:
    """The slide's ``n_lesions`` value from the sample sheet, or None when absent or empty.

    Raises:
        InputError: naming ``source`` when the value is not a non-negative whole number.
    """
    if EXPECTED_COLUMN not in sheet.columns:
        return None
    values = sheet.loc[sheet["slide_id"].astype(str) == slide_id, EXPECTED_COLUMN]
    if values.empty or pd.isna(values.iloc[0]) or str(values.iloc[0]).strip() == "":
        return None
    try:
        value = float(values.iloc[0])
    except ValueError:
        value = -1.0
    if value < 0 or not value.is_integer():
        raise InputError(
            source, f"slide {slide_id}: {EXPECTED_COLUMN}={values.iloc[0]!r} is not a count"
        )
    return int(value)


def detect_slide(
    heatmap_path: str | Path,
    slide_path: str | Path,
    truth: pd.DataFrame,
    box_cfg: dict[str, Any],
    *,
    out_boxes: str | Path,
    out_geojson: str | Path,
    out_overlay: str | Path,
    expected: int | None = None,
) -> pd.DataFrame:
    """Boxes of one slide from its heatmap, written as CSV, GeoJSON and overlay PNG.

    ``box_cfg`` holds the keyword arguments of :func:`boxes_from_heatmap` plus ``overlay_px``
    (long side of the overlay thumbnail). ``expected`` (the slide's lesion count, when known)
    replaces ``top_n``. The CSV has ``slide_id,x1,y1,x2,y2,score,...`` in level-0 pixels.
    """
    cfg = dict(box_cfg)
    overlay_px = int(cfg.pop("overlay_px", OVERLAY_PX))
    if expected is not None:
        cfg["top_n"] = expected
    heatmap = Heatmap.load(heatmap_path)
    boxes = boxes_from_heatmap(heatmap, **cfg)
    boxes.insert(0, "slide_id", heatmap.slide_id)
    contours = heatmap_contours(heatmap, level=cfg.get("threshold", 0.5))
    write_geojson(boxes_geojson(boxes, truth, contours, mpp=heatmap.mpp), out_geojson)
    long_side = max(heatmap.slide_width, heatmap.slide_height)
    thumb_mpp = heatmap.mpp * max(1.0, long_side / overlay_px)
    with SlideReader(
        slide_path, cache_bytes=THUMB_CACHE_BYTES, threads=reading_threads()
    ) as slide:  # one pass
        thumb, ds = read_thumbnail(slide, heatmap.mpp, thumb_mpp)
    n_true = len(truth)
    title = f"{heatmap.slide_id}: {len(boxes)} predicted (red), {n_true} true (green)"
    if not math.isclose(thumb_mpp, heatmap.mpp):
        title += f", {thumb_mpp:.1f} um/px"
    overlay_png(
        thumb, ds, out_overlay, heatmap=heatmap, pred_boxes=boxes, gt_boxes=truth, title=title
    )
    with atomic_path(out_boxes) as tmp:
        boxes.to_csv(tmp, index=False)
    return boxes
