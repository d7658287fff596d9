"""Fuzzing every per-slide annotation reader (hypothesis): random valid and broken files.

Invariants: a reader returns outlines of positive area or raises the package's one-line
:class:`AnnotationError` naming the file, never anything else; a valid outline's area survives
the round trip within 0.1%; the DigiLut box index is written whole or not at all. Random
files are raw vertices, truncated or corrupted files, and structured ones: ImageScope layers
with holes and region types, ASAP groups (cycles included), GeoJSON geometry kinds and QuPath
classes, DigiLut rows, each with or without a byte-order mark and CRLF line ends.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from histodetect.annotations.formats import ImportSettings, read_annotation_file
from histodetect.annotations.lesions import (
    read_box_index,
    read_digilut_csv,
    slide_name_map,
    write_box_index,
)
from histodetect.errors import AnnotationError

FORMATS = ("geojson", "aperio", "asap", "ncrf", "points")
SUFFIX = {
    "geojson": ".geojson",
    "aperio": ".xml",
    "asap": ".xml",
    "ncrf": ".json",
    "points": ".csv",
}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

number = st.one_of(
    st.floats(-1e4, 1e5, allow_nan=False, width=32),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0]),
    st.integers(-10, 10**6),
)
text_or_number = st.one_of(number, st.text(max_size=4), st.none())
vertices = st.lists(st.tuples(text_or_number, text_or_number), max_size=7)
rectangle = st.tuples(
    st.floats(0, 5e4), st.floats(0, 5e4), st.floats(1, 5e3), st.floats(1, 5e3)
)  # x, y, width, height


def corners(x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


def write(fmt: str, shapes: list[list[tuple[object, object]]], folder: Path) -> Path:
    """``shapes`` as a file of ``fmt`` (each shape its vertices, written as they are)."""
    path = folder / f"a{SUFFIX[fmt]}"
    if fmt == "geojson":
        features = [
            {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
             "geometry": {"type": "Polygon", "coordinates": [[list(v) for v in [*s, *s[:1]]]]}}
            for s in shapes
        ]  # fmt: skip
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    elif fmt == "ncrf":
        path.write_text(json.dumps({"positive": [{"name": "_0", "vertices": [list(v) for v in s]} for s in shapes], "negative": []}))  # fmt: skip
    elif fmt == "points":
        rows = [f"{s[0][0]},{s[0][1]},mitosis" for s in shapes if s]
        path.write_text("x,y,class\n" + "\n".join(rows))
    elif fmt == "aperio":
        regions = "".join(
            '<Region Id="{}" Type="0"><Vertices>{}</Vertices></Region>'.format(
                i, "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in s)
            )
            for i, s in enumerate(shapes, 1)
        )
        path.write_text(f'<Annotations MicronsPerPixel="0.5"><Annotation Id="1"><Regions>{regions}</Regions></Annotation></Annotations>')  # fmt: skip
    else:
        anns = "".join(
            '<Annotation Name="{}" Type="Polygon" PartOfGroup="_0"><Coordinates>{}</Coordinates></Annotation>'.format(
                i, "".join(f'<Coordinate Order="{j}" X="{x}" Y="{y}"/>' for j, (x, y) in enumerate(s))
            )
            for i, s in enumerate(shapes, 1)
        )  # fmt: skip
        path.write_text(f"<ASAP_Annotations><Annotations>{anns}</Annotations></ASAP_Annotations>")
    return path


def read_or_one_line(path: Path, fmt: str, import_settings: ImportSettings | None = None) -> object:
    """The reader's table, or None after checking its error is one line naming the file."""
    try:
        table = read_annotation_file(path, import_settings or ImportSettings(), mpp=0.5, fmt=fmt)
    except AnnotationError as err:
        msg = str(err)
        assert msg.startswith(f"{path}: ") and "\n" not in msg and len(msg) < 600, msg
        return None
    for geom in table.geometry:
        assert geom.is_valid and geom.area > 0 and geom.geom_type in ("Polygon", "MultiPolygon")
    return table


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(shapes=st.lists(vertices, max_size=5))
def test_random_vertices_read_or_refused_in_one_line(fmt: str, shapes: list) -> None:
    with tempfile.TemporaryDirectory() as folder:
        read_or_one_line(write(fmt, shapes, Path(folder)), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(
    shapes=st.lists(rectangle, min_size=1, max_size=4),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=3)), max_size=3),
)
def test_truncated_and_corrupted_files_read_or_refused_in_one_line(
    fmt: str, shapes: list, cut: float, flips: list
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(fmt, [corners(*r) for r in shapes], Path(folder))
        data = bytearray(path.read_bytes()[: max(1, round(cut * path.stat().st_size))])
        for where, junk in flips:
            at = min(int(where * len(data)), len(data))
            data[at : at + len(junk)] = junk
        path.write_bytes(bytes(data))
        read_or_one_line(path, fmt)


@pytest.mark.parametrize("fmt", ["geojson", "aperio", "asap", "ncrf"])
@FUZZ
@given(shapes=st.lists(rectangle, min_size=1, max_size=5))
def test_valid_outlines_keep_their_area(fmt: str, shapes: list) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(fmt, [corners(*r) for r in shapes], Path(folder))
        table = read_or_one_line(path, fmt)
    assert table is not None
    areas = [g.area for g in table.geometry]  # type: ignore[attr-defined]
    assert areas == pytest.approx([w * h for _, _, w, h in shapes], rel=1e-3)


# --- structured files: layers, holes, types, groups, geometry kinds, BOM and CRLF -------------

name_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)  # any XML-legal or not
polygon = st.one_of(rectangle.map(lambda r: corners(*r)), vertices)
encoding = st.tuples(st.booleans(), st.booleans())  # (byte-order mark, CRLF)


def encoded(text: str, bom_crlf: tuple[bool, bool]) -> bytes:
    bom, crlf = bom_crlf
    return ("\ufeff" if bom else "").encode() + text.replace("\n", "\r\n" if crlf else "\n").encode(
        "utf-8"
    )


def xml_vertices(tag: str, shape: list, order: bool = False) -> str:
    return "".join(
        f"<{tag}{f' Order={quoteattr(str(j))}' if order else ''} X={quoteattr(str(x))} Y={quoteattr(str(y))}/>\n"
        for j, (x, y) in enumerate(shape)
    )  # fmt: skip


aperio_region = st.tuples(
    st.sampled_from(["0", "1", "2", "3", "5", "Polygon", "banana", ""]),
    st.sampled_from(["0", "1", None]),  # NegativeROA
    name_text,
    polygon,
)


@FUZZ
@given(layers=st.lists(st.tuples(name_text, st.lists(aperio_region, max_size=4)), max_size=3),
       how=st.sampled_from(["none", "name", "text", "attribute:Grade"]), form=encoding)  # fmt: skip
def test_aperio_layers_holes_and_types_read_or_refused_in_one_line(
    layers: list, how: str, form: tuple[bool, bool]
) -> None:
    body = ""
    for i, (name, regions) in enumerate(layers, 1):
        body += f'<Annotation Id="{i}" Name={quoteattr(name)}>\n<Attributes><Attribute Name="Grade" Value={quoteattr(name)}/></Attributes>\n<Regions>\n'  # fmt: skip
        for j, (kind, negative, text, shape) in enumerate(regions, 1):
            roa = "" if negative is None else f' NegativeROA="{negative}"'
            body += f'<Region Id="{j}" Type={quoteattr(kind)} Text={quoteattr(text)}{roa}>\n<Vertices>\n{xml_vertices("Vertex", shape)}</Vertices>\n</Region>\n'  # fmt: skip
        body += "</Regions>\n</Annotation>\n"
    text = f'<?xml version="1.0" encoding="utf-8"?>\n<Annotations MicronsPerPixel="0.5">\n{body}</Annotations>\n'  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.xml"
        path.write_bytes(encoded(text, form))
        read_or_one_line(path, "aperio", ImportSettings(aperio_class=how))


group_name = st.sampled_from(["_0", "_2", "tumor", "tumor_core", "a", "b", "None", ""])


@FUZZ
@given(
    annotations=st.lists(
        st.tuples(group_name, st.sampled_from(["Polygon", "Rectangle", "Dot", "PointSet", "Spline", ""]), polygon),
        max_size=4,
    ),
    groups=st.dictionaries(group_name, group_name, max_size=5),
    form=encoding,
)  # fmt: skip
def test_asap_groups_and_types_read_or_refused_in_one_line(
    annotations: list, groups: dict, form: tuple[bool, bool]
) -> None:
    anns = "".join(
        f'<Annotation Name="{i}" Type={quoteattr(kind)} PartOfGroup={quoteattr(group)}>\n<Coordinates>\n{xml_vertices("Coordinate", shape, order=True)}</Coordinates>\n</Annotation>\n'
        for i, (group, kind, shape) in enumerate(annotations)
    )  # fmt: skip
    grps = "".join(f"<Group Name={quoteattr(g)} PartOfGroup={quoteattr(p)}/>\n" for g, p in groups.items())  # fmt: skip
    text = f"<ASAP_Annotations>\n<Annotations>\n{anns}</Annotations>\n<AnnotationGroups>\n{grps}</AnnotationGroups>\n</ASAP_Annotations>\n"  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.xml"
        path.write_bytes(encoded(text, form))
        read_or_one_line(path, "asap")


def geometry(kind: str, shape: list) -> dict:
    ring = [list(v) for v in [*shape, *shape[:1]]]
    coords = {
        "Point": list(shape[0]) if shape else [],
        "MultiPoint": [list(v) for v in shape],
        "LineString": [list(v) for v in shape],
        "Polygon": [ring],
        "MultiPolygon": [[ring], [ring[::-1]]],
    }[kind]
    return {"type": kind, "coordinates": coords}


geo_feature = st.tuples(
    st.sampled_from(["Point", "MultiPoint", "LineString", "Polygon", "MultiPolygon"]),
    st.sampled_from([None, "Tumor", "Ignore*", "Region*", "Stroma", ""]),
    polygon,
)


@FUZZ
@given(
    features=st.lists(geo_feature, max_size=5),
    layout=st.sampled_from(["collection", "list", "single"]),
    as_points=st.sampled_from(["none", "centroid"]),
    form=encoding,
)
def test_geojson_kinds_and_classes_read_or_refused_in_one_line(
    features: list, layout: str, as_points: str, form: tuple[bool, bool]
) -> None:
    feats = [
        {"type": "Feature", "geometry": geometry(kind, shape),
         "properties": {"isLocked": True} | ({} if cls is None else {"classification": {"name": cls, "colorRGB": -65536}})}
        for kind, cls, shape in features
    ]  # fmt: skip
    data = {"collection": {"type": "FeatureCollection", "features": feats}, "list": feats,
            "single": feats[0] if feats else {}}[layout]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.geojson"
        path.write_bytes(encoded(json.dumps(data, indent=1), form))
        read_or_one_line(path, "geojson", ImportSettings(as_points=as_points))


# --- DigiLut CSV: read, and the box index written whole or not at all -------------------------

digilut_row = st.tuples(
    st.sampled_from(["s1", "alpha.tif", "s2", "unknown.svs", ""]),
    text_or_number, text_or_number, text_or_number, text_or_number,
    st.one_of(st.none(), st.sampled_from([100, 1000, 50_000])),
)  # fmt: skip
DIGILUT_SHEET = pd.DataFrame({"slide_id": ["s1", "s2"], "path": ["/d/alpha.tif", "/d/beta.svs"]})


@FUZZ
@given(rows=st.lists(digilut_row, max_size=5), size_columns=st.booleans(), form=encoding)
def test_digilut_csv_read_or_refused_in_one_line_and_index_whole_or_absent(
    rows: list, size_columns: bool, form: tuple[bool, bool]
) -> None:
    header = "filename,x1,x2,y1,y2" + (",max_x,max_y" if size_columns else "")
    lines = [
        ",".join(map(str, [*row[:5], *((row[5], row[5]) if size_columns else ())])) for row in rows
    ]
    with tempfile.TemporaryDirectory() as folder:
        path, index = Path(folder) / "boxes.csv", Path(folder) / "boxes.parquet"
        path.write_bytes(encoded("\n".join([header, *lines]) + "\n", form))
        try:
            n = write_box_index(DIGILUT_SHEET, path, index)
        except AnnotationError as err:
            assert str(err).startswith(f"{path}: ") and "\n" not in str(err), str(err)
            assert not index.exists()  # nothing partial written
            return
        boxes, _ = read_box_index(index, ["s1", "s2"])
    assert len(boxes) == n == len(rows)
    assert (boxes.x1 < boxes.x2).all() and (boxes.y1 < boxes.y2).all()


@FUZZ
@given(boxes=st.lists(rectangle, min_size=1, max_size=5))
def test_digilut_boxes_inside_the_slide_keep_their_area(boxes: list) -> None:
    rows = "".join(f"s1,{x},{x + w},{y},{y + h},60000,60000\n" for x, y, w, h in boxes)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "boxes.csv"
        path.write_text("filename,x1,x2,y1,y2,max_x,max_y\n" + rows)
        read = read_digilut_csv(path, slide_name_map(DIGILUT_SHEET))
    areas = ((read.x2 - read.x1) * (read.y2 - read.y1)).tolist()
    assert areas == pytest.approx([w * h for _, _, w, h in boxes], rel=1e-3)


star = st.lists(st.tuples(st.floats(0, 2 * math.pi), st.floats(5, 500)), min_size=3, max_size=12)


@pytest.mark.parametrize("fmt", ["geojson", "aperio", "asap", "ncrf"])
@FUZZ
@given(stars=st.lists(star, min_size=1, max_size=3), centre=st.tuples(st.floats(600, 4e4), st.floats(600, 4e4)))  # fmt: skip
def test_valid_star_outlines_keep_their_area(fmt: str, stars: list, centre: tuple) -> None:
    shapes = []
    for points in stars:
        angles = sorted({round(a, 6) for a, _ in points})
        if len(angles) < 3:
            continue
        radii = [r for _, r in points]
        shapes.append([(centre[0] + radii[k] * math.cos(a), centre[1] + radii[k] * math.sin(a)) for k, a in enumerate(angles)])  # fmt: skip
    expected = [shapely.Polygon(s) for s in shapes]
    if not shapes or not all(p.is_valid and p.area > 1e-6 for p in expected):
        return  # a star of collinear or repeated points is not a valid outline
    with tempfile.TemporaryDirectory() as folder:
        table = read_or_one_line(write(fmt, shapes, Path(folder)), fmt)
    assert table is not None
    assert [g.area for g in table.geometry] == pytest.approx([p.area for p in expected], rel=1e-3)  # type: ignore[attr-defined]
