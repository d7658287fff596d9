"""Per-slide annotation files: a round trip per format and one error line per malformed file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import shapely

from histodetect.annotations.formats import (
    EXCLUDE,
    ImportSettings,
    detect_format,
    read_annotation_file,
)
from histodetect.errors import AnnotationError

TRIANGLE = [(100.0, 100.0), (400.0, 120.0), (250.0, 380.0)]
RECT = [(500.0, 50.0), (700.0, 50.0), (700.0, 150.0), (500.0, 150.0)]


def closed(ring: list[tuple[float, float]]) -> list[list[float]]:
    return [list(p) for p in [*ring, ring[0]]]


def feature(geometry: dict, cls: str | None) -> dict:
    props = {"objectType": "annotation"}
    if cls is not None:
        props["classification"] = {"name": cls, "color": [255, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": props}


def qupath_features() -> list[dict]:
    return [
        feature({"type": "Polygon", "coordinates": [closed(TRIANGLE)]}, "Tumor"),
        feature({"type": "Polygon", "coordinates": [closed(RECT)]}, None),  # a rectangle
        feature({"type": "Point", "coordinates": [800.0, 800.0]}, "Mitosis"),
    ]


def asap_xml(annotations: list[tuple[str, str, str, list[tuple[float, float]]]]) -> str:
    parts = []
    for name, kind, group, pts in annotations:
        coords = "".join(
            f'<Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(pts)
        )
        parts.append(
            f'<Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}" Color="#F4FA58">'
            f"<Coordinates>{coords}</Coordinates></Annotation>"
        )
    return (
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        + "".join(parts)
        + '</Annotations><AnnotationGroups><Group Name="_0" PartOfGroup="None" />'
        "</AnnotationGroups></ASAP_Annotations>"
    )


def one_line_error(path: Path, match: str, **kwargs: object) -> str:
    settings = kwargs.pop("settings", ImportSettings())
    with pytest.raises(AnnotationError, match=match) as info:
        read_annotation_file(path, settings, **kwargs)  # type: ignore[arg-type]
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(path) + ": ")
    return text


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["collection", "list", "single"])
def test_geojson_round_trip(tmp_path: Path, layout: str) -> None:
    feats = qupath_features()
    data = {
        "collection": {"type": "FeatureCollection", "features": feats},
        "list": feats,
        "single": feats[0],
    }[layout]
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps(data))
    out = read_annotation_file(p, ImportSettings(point_radius_um=5.0), mpp=0.5)
    expected_n = 1 if layout == "single" else 2  # the point beside outlines is left out
    assert len(out) == expected_n
    assert list(out.columns) == ["class_name", "geometry", "item"]
    assert out.class_name[0] == "Tumor"
    assert out.geometry[0].equals(shapely.Polygon(TRIANGLE))
    if expected_n == 2:
        assert out.class_name.tolist() == ["Tumor", "lesion"]
        assert out.geometry[1].equals(shapely.Polygon(RECT))
        assert out.item.tolist() == ["feature 1", "feature 2"]


def test_geojson_file_of_points_gives_discs(tmp_path: Path) -> None:
    p = tmp_path / "a.geojson"
    multi = {"type": "MultiPoint", "coordinates": [[100.0, 100.0], [900.0, 100.0]]}
    p.write_text(json.dumps([qupath_features()[2], feature(multi, None)]))
    out = read_annotation_file(p, ImportSettings(point_radius_um=5.0), mpp=0.5)
    assert out.class_name.tolist() == ["Mitosis", "lesion"]
    disc = out.geometry[0]
    assert disc.centroid.distance(shapely.Point(800, 800)) < 1e-6
    assert disc.area == pytest.approx(math.pi * 10.0**2, rel=0.01)  # 5 um at 0.5 um/px
    assert len(shapely.get_parts(out.geometry[1])) == 2


def test_geojson_points_and_lines_beside_outlines_are_left_out_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = tmp_path / "mixed.geojson"
    line = feature({"type": "LineString", "coordinates": TRIANGLE}, "Tumor")
    multi = feature({"type": "MultiPoint", "coordinates": [[5.0, 5.0], [9.0, 9.0]]}, None)
    features = [qupath_features()[2], *qupath_features()[:2], line, multi]
    p.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with caplog.at_level("WARNING"):
        out = read_annotation_file(p, ImportSettings(), mpp=0.5)
    assert out.item.tolist() == ["feature 2", "feature 3"]
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        f"{p}: 3 item(s) with no area (a point beside outlines, a line, under 3 vertices or "
        "empty) left out: feature 1, feature 4, feature 5"
    ]
    # points mode from outlines keeps the points as points, in file order
    points = read_annotation_file(p, ImportSettings(as_points="centroid"), mpp=0.5)
    assert points.item.tolist() == ["feature 1", "feature 2", "feature 3", "feature 5"]
    # in points mode (labels.overlap: point) the points stay points beside the outlines
    kept = read_annotation_file(p, ImportSettings(points_mode=True), mpp=0.5)
    assert kept.item.tolist() == ["feature 1", "feature 2", "feature 3", "feature 5"]
    assert kept.geometry[0].area == pytest.approx(math.pi * 32.0**2, rel=0.01)  # a disc
    # beside an Ignore* region only, the points are a points file's
    ignore = feature({"type": "Polygon", "coordinates": [closed(RECT)]}, "Ignore*")
    p.write_text(json.dumps([qupath_features()[2], ignore]))
    assert read_annotation_file(p, ImportSettings(), mpp=0.5).class_name.tolist() == [
        "Mitosis",
        "exclude",
    ]


def test_geojson_multipolygon_and_scale(tmp_path: Path) -> None:
    mp = {"type": "MultiPolygon", "coordinates": [[closed(TRIANGLE)], [closed(RECT)]]}
    p = tmp_path / "a.json"
    p.write_text(json.dumps([feature(mp, "Tumor")]))
    out = read_annotation_file(p, ImportSettings(scale=0.5))
    expected = shapely.affinity.scale(
        shapely.MultiPolygon([shapely.Polygon(TRIANGLE), shapely.Polygon(RECT)]),
        0.5,
        0.5,
        origin=(0, 0),
    )
    assert out.geometry[0].equals(expected)


def test_asap_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "tumor_009.xml"
    p.write_text(
        asap_xml(
            [
                ("Annotation 0", "Polygon", "_0", list(reversed(TRIANGLE))),
                ("Annotation 1", "Rectangle", "_1", RECT),
                ("Annotation 2", "Polygon", "_2", [(200, 150), (260, 150), (250, 200)]),
                ("Annotation 3", "Dot", "Mitosis", [(900, 900)]),
                ("Annotation 4", "Spline", "DCIS", RECT),
            ]
        )
    )
    out = read_annotation_file(p, ImportSettings(point_radius_um=4.0), mpp=0.25)
    assert out.class_name.tolist() == ["lesion", "lesion", EXCLUDE, "Mitosis", "DCIS"]
    assert out.geometry[0].equals(shapely.Polygon(TRIANGLE))
    assert out.geometry[1].equals(shapely.Polygon(RECT))
    assert out.geometry[3].area == pytest.approx(math.pi * 16.0**2, rel=0.01)
    assert out.item[2] == "Annotation 3 ('Annotation 2')"


def test_asap_coordinate_order_attribute_wins(tmp_path: Path) -> None:
    p = tmp_path / "a.xml"
    text = asap_xml([("A", "Polygon", "_0", RECT)])
    # swap the document order of two coordinates: Order must put them back
    text = text.replace(
        '<Coordinate Order="1" X="700.0" Y="50.0" /><Coordinate Order="2" X="700.0" Y="150.0" />',
        '<Coordinate Order="2" X="700.0" Y="150.0" /><Coordinate Order="1" X="700.0" Y="50.0" />',
    )
    assert 'Order="2" X="700.0" Y="150.0" /><Coordinate Order="1"' in text
    p.write_text(text)
    assert read_annotation_file(p, ImportSettings()).geometry[0].equals(shapely.Polygon(RECT))


def test_ncrf_round_trip_with_scale(tmp_path: Path) -> None:
    p = tmp_path / "Tumor_009.json"
    hole = [(200, 150), (260, 150), (250, 200)]
    data = {
        "positive": [{"name": "_0", "vertices": [list(v) for v in TRIANGLE]}],
        "negative": [{"name": "_1", "vertices": [list(v) for v in hole]}],
    }
    p.write_text(json.dumps(data))
    assert detect_format(p) == "ncrf"
    out = read_annotation_file(p, ImportSettings(scale=1 / 32))
    assert out.class_name.tolist() == ["lesion", EXCLUDE]
    assert out.geometry[0].area == pytest.approx(shapely.Polygon(TRIANGLE).area / 32**2)
    assert out.geometry[0].bounds == pytest.approx((100 / 32, 100 / 32, 400 / 32, 380 / 32))


def test_point_csv_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "mitoses.csv"
    pd.DataFrame({"x": [10.0, 500.0], "y": [20.0, 600.0], "class": ["mitosis", None]}).to_csv(
        p, index=False
    )
    assert detect_format(p) == "points"
    out = read_annotation_file(p, ImportSettings(point_radius_um=8.0), mpp=0.5)
    assert out.class_name.tolist() == ["mitosis", "lesion"]
    for geom, centre in zip(out.geometry, [(10, 20), (500, 600)], strict=True):
        assert geom.centroid.distance(shapely.Point(centre)) < 1e-6
        assert geom.area == pytest.approx(math.pi * 16.0**2, rel=0.01)
    assert out.item.tolist() == ["row 2", "row 3"]


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    p = tmp_path / "outlines.txt"
    p.write_text(json.dumps({"positive": [{"name": "a", "vertices": TRIANGLE}], "negative": []}))
    out = read_annotation_file(p, ImportSettings(), fmt="ncrf")
    assert out.geometry[0].equals(shapely.Polygon(TRIANGLE))
    out = read_annotation_file(p, ImportSettings(format="ncrf"))
    assert len(out) == 1


def test_self_intersecting_outline_is_repaired(tmp_path: Path) -> None:
    bowtie = [(0, 0), (10, 10), (10, 0), (0, 10)]
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps([feature({"type": "Polygon", "coordinates": [closed(bowtie)]}, "T")]))
    geom = read_annotation_file(p, ImportSettings()).geometry[0]
    assert geom.is_valid and geom.area == pytest.approx(50.0)


# --- malformed files: one error line naming the file and the item ---------------------------


@pytest.mark.parametrize("name", ["a.geojson", "a.json", "a.xml", "a.csv"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_text("")
    one_line_error(p, "empty|no <Annotation>|invalid XML")


def test_invalid_geojson_syntax(tmp_path: Path) -> None:
    p = tmp_path / "a.geojson"
    p.write_text('{"type": "FeatureCollection", "features": [')
    one_line_error(p, "invalid JSON at line 1")


def test_geojson_not_features(tmp_path: Path) -> None:
    p = tmp_path / "a.geojson"
    p.write_text('{"type": "Topology"}')
    one_line_error(p, "not GeoJSON")


def test_geojson_feature_without_geometry(tmp_path: Path) -> None:
    p = tmp_path / "a.geojson"
    feats = qupath_features()
    feats[1]["geometry"] = None
    p.write_text(json.dumps(feats))
    one_line_error(p, "feature 2: no geometry", mpp=0.5)


def test_geojson_bad_coordinates(tmp_path: Path) -> None:
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps([feature({"type": "Polygon", "coordinates": [["a", "b"]]}, "T")]))
    one_line_error(p, "feature 1: invalid geometry")


def test_geojson_line_is_left_out_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = tmp_path / "a.geojson"
    line = feature({"type": "LineString", "coordinates": TRIANGLE}, "T")
    p.write_text(json.dumps([line]))
    one_line_error(p, r"no annotations in the file \(1 with no area: feature 1\)")
    area = feature({"type": "Polygon", "coordinates": [[*TRIANGLE, TRIANGLE[0]]]}, "T")
    p.write_text(json.dumps([area, line]))
    with caplog.at_level("WARNING"):
        out = read_annotation_file(p, ImportSettings())
    assert out.item.tolist() == ["feature 1"]
    assert (
        f"{p}: 1 item(s) with no area (a point beside outlines, a line, under 3 vertices or "
        "empty) left out: feature 2" in caplog.text
    )


def test_geojson_empty_point_and_multipoint_are_left_out(tmp_path: Path) -> None:
    """Found by the fuzz test: an empty Point raised GEOSException, an empty MultiPoint gave
    a row of no area."""
    p = tmp_path / "a.geojson"
    empty = [feature({"type": t, "coordinates": []}, None) for t in ("Point", "MultiPoint")]
    p.write_text(json.dumps([*empty, qupath_features()[2]]))
    assert read_annotation_file(p, ImportSettings(), mpp=0.5).item.tolist() == ["feature 3"]
    p.write_text(json.dumps(empty))
    one_line_error(
        p, r"no annotations in the file \(2 with no area: feature 1, feature 2\)", mpp=0.5
    )


def test_geojson_points_need_mpp(tmp_path: Path) -> None:
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps(qupath_features()[2:]))
    one_line_error(p, "feature 1: point annotations need the slide's mpp")


def test_xml_without_coordinates(tmp_path: Path) -> None:
    p = tmp_path / "a.xml"
    p.write_text(asap_xml([("A", "Polygon", "_0", TRIANGLE), ("B", "Polygon", "_0", [])]))
    assert read_annotation_file(p, ImportSettings()).item.tolist() == ["Annotation 1 ('A')"]
    p.write_text(asap_xml([("B", "Polygon", "_0", [])]))
    one_line_error(p, r"no annotations in the file \(1 with no area: Annotation 1 \('B'\)\)")


def test_xml_broken(tmp_path: Path) -> None:
    p = tmp_path / "a.xml"
    p.write_text("<ASAP_Annotations><Annotations>")
    one_line_error(p, "invalid XML")


def test_xml_nan_coordinate(tmp_path: Path) -> None:
    p = tmp_path / "a.xml"
    p.write_text(asap_xml([("A", "Polygon", "_0", [(0, 0), (float("nan"), 5), (5, 5)])]))
    one_line_error(p, r"Annotation 1 \('A'\): coordinate not a finite number")


def test_ncrf_too_few_vertices(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"positive": [{"name": "_0", "vertices": [[0, 0], [1, 1]]}]}))
    one_line_error(p, r"no annotations in the file \(1 with no area: positive\[0\]\)")


def test_ncrf_entry_without_vertices(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"positive": [], "negative": [{"name": "_0"}]}))
    one_line_error(p, r'negative\[0\]: no "vertices"')


def test_points_nan(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("x,y\n1,2\n3,\n")
    one_line_error(p, "row 3: x or y not a number", mpp=0.5)


def test_points_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("x,z\n1,2\n")
    one_line_error(p, "missing column x or y", mpp=0.5)


def test_file_not_found_and_unknown_extension(tmp_path: Path) -> None:
    one_line_error(tmp_path / "missing.geojson", "not found")
    p = tmp_path / "a.shp"
    p.write_text("x")
    one_line_error(p, "cannot tell the annotation format")


def test_bad_import_settings() -> None:
    with pytest.raises(AnnotationError, match="format 'shapefile'"):
        ImportSettings(format="shapefile")
    with pytest.raises(AnnotationError, match="> 0"):
        ImportSettings(scale=0)


def test_qupath_exports_as_they_come(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A byte-order mark and CRLF line ends, QuPath's Ignore* (cut out) and Region* (left out)
    classes, a polygon with a hole, a multipolygon, a geometry collection, a locked object with
    colorRGB, and a non-ASCII class, in one FeatureCollection."""
    square = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]
    hole = [[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]]
    far = [[[x + 200, y] for x, y in square]]
    locked = {"objectType": "annotation", "isLocked": True,
              "classification": {"name": "Tumör", "colorRGB": -3670016}}  # fmt: skip
    polygon = {"type": "Polygon", "coordinates": [square]}
    features = [
        {
            "type": "Feature",
            "geometry": {**polygon, "coordinates": [square, hole]},
            "properties": locked,
        },
        feature({"type": "MultiPolygon", "coordinates": [[square], far]}, "Tumor"),
        feature({"type": "GeometryCollection", "geometries": [polygon]}, None),
        feature({"type": "Polygon", "coordinates": [square]}, "Ignore*"),
        feature({"type": "Polygon", "coordinates": [square]}, "Region*"),
    ]
    p = tmp_path / "export.geojson"
    text = json.dumps({"type": "FeatureCollection", "features": features}, indent=1, ensure_ascii=False)  # fmt: skip
    p.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    with caplog.at_level("WARNING"):
        out = read_annotation_file(p, ImportSettings())
    assert out.class_name.tolist() == ["Tumör", "Tumor", "lesion", "exclude"]
    assert [g.area for g in out.geometry] == [100 * 100 - 20 * 20, 2 * 100 * 100, 100 * 100, 100 * 100]  # fmt: skip
    assert f"{p}: 1 Region* object(s) (QuPath's regions of interest, not lesions) left out: feature 5" in caplog.text  # fmt: skip
