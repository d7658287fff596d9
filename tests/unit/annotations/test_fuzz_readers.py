"""Fuzzing every per-slide annotation reader (hypothesis): random valid and broken files.

Invariants: a reader returns outlines of positive area or raises the package's one-line
:class:`AnnotationError` naming the file, never anything else; a valid outline's area survives
the round trip within 0.1%.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from histodetect.annotations.formats import ImportSettings, read_annotation_file
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


def read_or_one_line(path: Path, fmt: str) -> object:
    """The reader's table, or None after checking its error is one line naming the file."""
    try:
        table = read_annotation_file(path, ImportSettings(), mpp=0.5, fmt=fmt)
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
