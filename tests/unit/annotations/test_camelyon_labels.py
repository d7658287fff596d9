"""Real case: Camelyon16 tumor_001 (level-5 file) with its two NCRF metastasis outlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image

from histodetect.annotations.formats import ImportSettings, read_annotation_file
from histodetect.annotations.labels import LabelSettings, label_tiles
from histodetect.annotations.lesions import clip_to_slide
from histodetect.detection.overlay import overlay_png
from histodetect.errors import AnnotationError
from histodetect.slides.tiling import TiledSlide, TilingSettings, tile_slide

MPP = 7.78  # level 5 of a 0.243 um/px scan; the TIFF has no mpp tag
TILE_PX = 16


@pytest.fixture(scope="module")
def tiled(camelyon_tif: Path) -> TiledSlide:
    settings = TilingSettings(tile_um=TILE_PX * MPP, target_mpp=MPP)
    return tile_slide(str(camelyon_tif), "tumor_001", settings, MPP)


@pytest.fixture(scope="module")
def outlines(camelyon_json: Path) -> pd.DataFrame:
    ann = read_annotation_file(camelyon_json, ImportSettings(scale=1 / 32))
    return ann.assign(slide_id="tumor_001", source=str(camelyon_json))


def test_outlines_fit_the_level5_slide_only_when_scaled(
    tiled: TiledSlide, outlines: pd.DataFrame, camelyon_json: Path
) -> None:
    w, h = tiled.summary["width"], tiled.summary["height"]
    assert (w, h) == (3072, 7168)
    assert len(outlines) == 2 and set(outlines.class_name) == {"lesion"}
    assert clip_to_slide(outlines, w, h) is outlines  # inside: nothing clipped
    raw = read_annotation_file(camelyon_json, ImportSettings())
    with pytest.raises(AnnotationError, match=r"positive\[0\]: slide tumor_001: outline"):
        clip_to_slide(raw.assign(slide_id="tumor_001", source="Tumor_001.json"), w, h)


def test_positive_tile_area_matches_the_outlines(
    tiled: TiledSlide, outlines: pd.DataFrame, tmp_path: Path
) -> None:
    tiles = tiled.tiles
    assert int(tiles["size"].iloc[0]) == TILE_PX
    out = label_tiles(tiles, outlines, LabelSettings("coverage", positive=0.5, negative=0.0))
    pos = out[out.label == 1]
    lesion = shapely.union_all(list(outlines.geometry))
    # exact: coverage sums to the outline area inside the tissue tiles
    tile_union = shapely.union_all(
        shapely.box(tiles.x, tiles.y, tiles.x + TILE_PX, tiles.y + TILE_PX)
    )
    assert (out.coverage.astype(float) * TILE_PX**2).sum() == pytest.approx(
        lesion.intersection(tile_union).area, rel=1e-5
    )
    # positive tiles: the area within (perimeter x tile side) of the outlines' area
    pos_area = len(pos) * TILE_PX**2
    assert abs(pos_area - lesion.area) <= lesion.length * TILE_PX
    assert len(pos) > 0.5 * lesion.area / TILE_PX**2
    # every positive tile lies at least half inside an outline; ignored tiles straddle one
    pos_boxes = shapely.box(pos.x, pos.y, pos.x + TILE_PX, pos.y + TILE_PX)
    assert (shapely.area(shapely.intersection(pos_boxes, lesion)) >= 0.5 * TILE_PX**2).all()
    ignored = out[out.label == -1]
    ign_boxes = shapely.box(ignored.x, ignored.y, ignored.x + TILE_PX, ignored.y + TILE_PX)
    assert shapely.intersects(ign_boxes, lesion.boundary).all()
    # the overlay of positive tiles and outline boxes, on the thumbnail around the lesions
    ds = tiled.thumb_downsample
    x0, y0, x1, y1 = (np.array(lesion.bounds) + np.array([-200, -200, 200, 200])) / ds
    crop = tiled.thumbnail[int(y0) : int(y1), int(x0) : int(x1)]
    shift = {"x": int(x0) * ds, "y": int(y0) * ds}
    boxes = pd.DataFrame([g.bounds for g in outlines.geometry], columns=["x1", "y1", "x2", "y2"])
    boxes[["x1", "x2"]] -= shift["x"]
    boxes[["y1", "y2"]] -= shift["y"]
    shown = pos.assign(x=pos.x - shift["x"], y=pos.y - shift["y"])
    png = tmp_path / "tumor_001_labels.png"
    overlay_png(crop, ds, png, tiles=shown, gt_boxes=boxes, title="tumor_001 positive tiles")
    assert np.asarray(Image.open(png)).shape[1] >= 400
