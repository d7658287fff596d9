"""Tile labels from point annotations: centre within the radius, grazing ignored, look-alikes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histodetect.annotations.formats import ImportSettings
from histodetect.annotations.labels import LabelSettings, label_tiles
from histodetect.annotations.lesions import clip_to_slide, read_cohort_annotations
from histodetect.cohort.sampling import undersample
from histodetect.errors import AnnotationError
from histodetect.slides.tiling import TilingSettings, tile_slide

POINTS = LabelSettings(overlap="point", negative_classes=("nonmitosis",))


def grid(n: int = 6, size: int = 40, stride: int = 20) -> pd.DataFrame:
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return pd.DataFrame(
        {
            "slide_id": "s", "x": cols.ravel() * stride, "y": rows.ravel() * stride,
            "size": size, "row": rows.ravel(), "col": cols.ravel(), "level": 0,
            "read_px": size, "tile_px": size, "tissue": 1.0, "stride": stride, "mpp": 1.0,
        }
    )  # fmt: skip


def points_file(tmp_path: Path, rows: list[tuple[float, float, str]]) -> pd.DataFrame:
    path = tmp_path / "s.csv"
    pd.DataFrame(rows, columns=["x", "y", "class"]).to_csv(path, index=False)
    sheet = pd.DataFrame({"slide_id": ["s"], "patient_id": ["p"], "path": ["s.jpg"],
                          "annotation": [str(path)], "mpp": [1.0]})  # fmt: skip
    return read_cohort_annotations(sheet, None, ImportSettings(point_radius_um=8.0))


def label_at(labelled: pd.DataFrame, x: int, y: int, column: str = "label") -> object:
    return labelled.loc[(labelled.x == x) & (labelled.y == y), column].item()


def test_point_labels_positive_ignored_negative(tmp_path: Path) -> None:
    # radius 8 px; tiles 40 px every 20 px, tile centres at 20, 40, 60, ...
    ann = points_file(tmp_path, [(60, 60, "mitosis"), (160, 160, "nonmitosis")])
    labelled = label_tiles(grid(10), ann, POINTS)
    assert label_at(labelled, 40, 40) == 1  # its centre is the point
    assert (labelled.label == 1).sum() == 1  # every other tile centre is >= 20 px away
    assert label_at(labelled, 20, 40) == -1  # the point lies on its edge: grazed, ignored
    assert label_at(labelled, 60, 40) == -1
    assert label_at(labelled, 0, 40) == 0  # 20 px beyond its edge, more than the radius
    assert label_at(labelled, 80, 40) == 0
    # the look-alike: a labelled negative, marked hard where a tile holds it
    assert label_at(labelled, 140, 140) == 0 and label_at(labelled, 140, 140, "hard")
    assert label_at(labelled, 120, 120) == 0 and not label_at(labelled, 120, 120, "hard")
    assert labelled.hard.sum() == 1


def test_sampling_keeps_hard_negatives_first(tmp_path: Path) -> None:
    ann = points_file(tmp_path, [(60, 60, "mitosis"), (160, 160, "nonmitosis")])
    labelled = label_tiles(grid(10), ann, POINTS)
    for seed in range(5):
        kept = undersample(labelled, ratio=1.0, seed=seed)
        assert kept.label.tolist().count(1) == 1
        assert kept[kept.label == 0].hard.all()


def sliderunner_centres(database: Path, image: str) -> pd.DataFrame:
    """``x, y, class`` of one image's annotations in a SlideRunner database (``.bmp`` names)."""
    query = (
        "SELECT c.coordinateX AS x, c.coordinateY AS y, lower(k.name) AS class "
        "FROM Annotations a JOIN Annotations_coordinates c ON c.annoId = a.uid "
        "JOIN Slides s ON s.uid = a.slide JOIN Classes k ON k.uid = a.agreedClass "
        "WHERE s.filename = ?"
    )
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return pd.read_sql_query(query, db, params=(Path(image).stem + ".bmp",))


def test_real_mitos_field_every_centre_in_a_positive_tile(
    mitos_field: Path, mitos_sqlite: Path, tmp_path: Path
) -> None:
    """One real MITOS 2012 field through tile_slide and label_tiles at 32 um tiles every 8 um."""
    mpp = 0.2456
    centres = sliderunner_centres(mitos_sqlite, mitos_field.name)
    assert len(centres) == 11
    path = tmp_path / "A01_04.csv"
    centres[["x", "y", "class"]].to_csv(path, index=False)
    sheet = pd.DataFrame({"slide_id": ["A01_04"], "patient_id": ["A01"], "path": [str(mitos_field)],
                          "annotation": [str(path)], "mpp": [mpp]})  # fmt: skip
    tiling = TilingSettings(tile_um=32.0, stride_um=8.0, target_mpp=0.5, min_tissue=0.0)
    tiled = tile_slide(str(mitos_field), "A01_04", tiling, mpp)
    assert len(tiled.tiles) == 60 * 60  # (2084 - 130) // 33 + 1 per side
    ann = read_cohort_annotations(sheet, None, ImportSettings(point_radius_um=6.0))
    labelled = label_tiles(tiled.tiles, ann, LabelSettings(overlap="point"))
    pos = labelled[labelled.label == 1]
    for x, y in centres[["x", "y"]].to_numpy():
        inside = (pos.x <= x) & (x < pos.x + pos["size"]) & (pos.y <= y) & (y < pos.y + pos["size"])
        assert inside.any(), f"centre ({x}, {y}) is in no positive tile"
    assert 11 <= len(pos) <= 11 * 6  # a few tiles per mitosis, not a blur
    assert (labelled.label == -1).sum() > len(pos)  # the band around each


def test_point_near_the_edge_is_inside_by_its_centre(tmp_path: Path) -> None:
    ann = points_file(tmp_path, [(3, 50, "mitosis")])  # its 8 px disc reaches x = -5
    kept = clip_to_slide(ann, 200, 200, centres=True)
    assert kept.geometry.iloc[0].bounds[0] < 0  # a point's disc is not clipped
    with pytest.raises(AnnotationError, match=r"row 2: .* has its centre outside the slide"):
        clip_to_slide(points_file(tmp_path, [(201, 50, "mitosis")]), 200, 200, centres=True)


def test_outlines_as_points_label_tiles_as_the_points_file_does(tmp_path: Path) -> None:
    """Nuclei outlined in a QuPath GeoJSON, read with as_points: centroid, give the tiles the
    labels a point file of their centroids gives (an elongated nucleus 50 px long around
    (60, 60), a square look-alike around (160, 160)); read as outlines, the long one's half
    length would stand for its radius."""
    long = [[35, 56], [85, 56], [85, 64], [35, 64], [35, 56]]
    square = [[155, 155], [165, 155], [165, 165], [155, 165], [155, 155]]
    features = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"classification": {"name": name}}}
        for ring, name in ((long, "mitosis"), (square, "nonmitosis"))
    ]  # fmt: skip
    path = tmp_path / "nuclei.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    sheet = pd.DataFrame({"slide_id": ["s"], "patient_id": ["p"], "path": ["s.jpg"],
                          "annotation": [str(path)], "mpp": [1.0]})  # fmt: skip
    settings = ImportSettings(point_radius_um=8.0, as_points="centroid")
    ann = read_cohort_annotations(sheet, None, settings)
    assert [round(g.centroid.x, 6) for g in ann.geometry] == [60.0, 160.0]
    from_points = label_tiles(grid(10), points_file(tmp_path, [(60, 60, "mitosis"), (160, 160, "nonmitosis")]), POINTS)  # fmt: skip
    from_outlines = label_tiles(grid(10), ann, POINTS)
    pd.testing.assert_frame_equal(from_outlines, from_points)
    as_outlines = label_tiles(grid(10), read_cohort_annotations(sheet, None, ImportSettings()), POINTS)  # fmt: skip
    assert (as_outlines.label == 1).sum() == 5 > (from_points.label == 1).sum() == 1
