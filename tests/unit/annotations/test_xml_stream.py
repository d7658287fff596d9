"""Annotation XML read as a stream: the same outlines as the whole-tree reader gave, with
memory bounded by one region (the file's elements are dropped once read)."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely

from histodetect.annotations.formats import ImportSettings, read_annotation_file
from histodetect.annotations.xml_stream import END, stream_xml
from histodetect.errors import AnnotationError

LAYERS_XML = (
    '\ufeff<?xml version="1.0" encoding="utf-8"?>\r\n'
    '<Annotations MicronsPerPixel="0.5">\r\n'
    ' <Annotation Id="1" Name="Tumör">\r\n'
    '  <Attributes><Attribute Name="Grade" Value="höch"/></Attributes>\r\n'
    "  <Regions>\r\n"
    '   <Region Id="1" Type="0" Text="Zelle ü">\r\n'
    '    <Vertices><Vertex X="0" Y="0"/><Vertex X="100" Y="0"/>'
    '<Vertex X="100" Y="100"/><Vertex X="0" Y="100"/></Vertices>\r\n'
    "   </Region>\r\n"
    '   <Region Id="2" Type="0" NegativeROA="1">\r\n'
    '    <Vertices><Vertex X="25" Y="25"/><Vertex X="75" Y="25"/>'
    '<Vertex X="75" Y="75"/><Vertex X="25" Y="75"/></Vertices>\r\n'
    "   </Region>\r\n"
    '   <Region Id="3" Type="1">\r\n'
    '    <Attributes><Attribute Name="Grade" Value="niedrig"/></Attributes>\r\n'
    '    <Vertices><Vertex X="200" Y="200"/><Vertex X="260" Y="240"/></Vertices>\r\n'
    "   </Region>\r\n"
    '   <Region Id="4" Type="0"><Vertices><Vertex X="5" Y="5"/></Vertices></Region>\r\n'
    "  </Regions>\r\n"
    " </Annotation>\r\n"
    ' <Annotation Id="2" Name="Stroma · 間質">\r\n'
    "  <Regions>\r\n"
    '   <Region Id="1" Type="2" Text="">\r\n'
    '    <Vertices><Vertex X="300" Y="0"/><Vertex X="400" Y="50"/></Vertices>\r\n'
    "   </Region>\r\n"
    '   <Region Id="2" Type="0" NegativeROA="1">\r\n'
    '    <Vertices><Vertex X="90" Y="90"/><Vertex X="120" Y="90"/>'
    '<Vertex X="120" Y="120"/><Vertex X="90" Y="120"/></Vertices>\r\n'
    "   </Region>\r\n"
    "  </Regions>\r\n"
    " </Annotation>\r\n"
    "</Annotations>\r\n"
)
"""Two layers with non-ASCII names, a hole in each, a rectangle, an ellipse, a one-vertex
stray region; CRLF line ends and a byte-order mark."""

ITEMS = ["Annotation 1 Region 1", "Annotation 1 Region 3", "Annotation 2 Region 1"]


@pytest.mark.parametrize(
    ("how", "classes"),
    [
        ("none", ["lesion", "lesion", "lesion"]),
        ("name", ["Tumör", "Tumör", "Stroma · 間質"]),
        ("text", ["Zelle ü", "lesion", "lesion"]),
        ("attribute:Grade", ["höch", "niedrig", "lesion"]),
    ],
)
def test_streamed_layers_give_the_whole_tree_outlines(
    tmp_path: Path, how: str, classes: list[str]
) -> None:
    path = tmp_path / "layers.xml"
    path.write_bytes(LAYERS_XML.encode("utf-8"))
    table = read_annotation_file(path, ImportSettings(aperio_class=how), mpp=0.5)
    assert table["item"].tolist() == ITEMS
    assert table.class_name.tolist() == classes
    # holes of both layers cut out of the square (the whole-tree reader gave these outlines)
    square = shapely.box(0, 0, 100, 100) - shapely.box(25, 25, 75, 75) - shapely.box(90, 90, 120, 120)  # fmt: skip
    assert table.geometry[0].equals(square) and table.geometry[0].area == 7400
    assert table.geometry[1].equals(shapely.box(200, 200, 260, 240))
    assert table.geometry[2].bounds == pytest.approx((300, 0, 400, 50))
    assert table.geometry[2].area == pytest.approx(3925.413946, rel=1e-9)


def test_stream_drops_each_region_once_read(tmp_path: Path) -> None:
    path = tmp_path / "layers.xml"
    path.write_bytes(LAYERS_XML.encode("utf-8"))
    held = []
    for event, ancestors, element in stream_xml(path, frozenset({"Annotation", "Region"})):
        if event == END and element.tag == "Region":
            held.append(len(ancestors[-1]))  # regions in their <Regions>, this one included
    # the parser reads a chunk ahead; each region read is gone from its parent at once
    assert held == [4, 3, 2, 1, 2, 1]
    assert len(ancestors) == 0 and len(element) == 0  # the root kept no layer


def test_xml_broken_after_good_regions_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.xml"
    path.write_bytes(LAYERS_XML.encode("utf-8")[: len(LAYERS_XML) // 2])
    with pytest.raises(AnnotationError, match=r"cut\.xml: invalid XML \(.*line") as err:
        read_annotation_file(path, ImportSettings(), mpp=0.5)
    assert "\n" not in str(err.value)
