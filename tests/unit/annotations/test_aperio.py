"""Aperio ImageScope XML: each region type, holes, classes, the file's mpp, the real TCGA file."""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import shapely

from histodetect.annotations.formats import ImportSettings, detect_format, read_annotation_file
from histodetect.annotations.lesions import lesion_slides, read_cohort_annotations
from histodetect.errors import AnnotationError

SQUARE = [(100.0, 100.0), (500.0, 100.0), (500.0, 500.0), (100.0, 500.0)]
HOLE = [(200.0, 200.0), (300.0, 200.0), (300.0, 300.0), (200.0, 300.0)]

Region = tuple[str, list[tuple[float, float]]] | tuple[str, list[tuple[float, float]], dict]


def imagescope(layers: list[tuple[dict, list[Region]]], mpp: float | None = 0.25) -> str:
    """ImageScope XML of ``layers``: (layer attributes, [(Type, vertices[, region attrs])])."""
    root = ET.Element("Annotations", {"MicronsPerPixel": f"{mpp}"} if mpp else {})
    for i, (attrs, regions) in enumerate(layers, 1):
        layer = ET.SubElement(root, "Annotation", {"Id": str(i), "Type": "4", **attrs})
        ET.SubElement(ET.SubElement(layer, "Attributes"), "Attribute", {"Name": "Description"})
        holder = ET.SubElement(layer, "Regions")
        for j, (kind, pts, *extra) in enumerate(regions, 1):
            region = ET.SubElement(
                holder,
                "Region",
                {"Id": str(j), "Type": kind, "NegativeROA": "0", **(extra or [{}])[0]},
            )
            verts = ET.SubElement(region, "Vertices")
            for x, y in pts:
                ET.SubElement(verts, "Vertex", {"X": f"{x}", "Y": f"{y}", "Z": "0"})
    return ET.tostring(root, encoding="unicode")


def write(tmp_path: Path, text: str, name: str = "slide.xml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_auto_tells_imagescope_from_asap_by_the_root(tmp_path: Path) -> None:
    aperio = write(tmp_path, imagescope([({}, [("0", SQUARE)])]), "a.xml")
    asap = write(tmp_path, "<ASAP_Annotations><Annotations/></ASAP_Annotations>", "b.xml")
    assert detect_format(aperio) == "aperio"
    assert detect_format(asap) == "asap"
    out = read_annotation_file(aperio, ImportSettings())  # auto: no '<Coordinate>' refusal
    assert out.geometry[0].equals(shapely.Polygon(SQUARE))


def test_each_region_type(tmp_path: Path) -> None:
    regions: list[Region] = [
        ("0", SQUARE),
        ("1", [(600.0, 100.0), (800.0, 100.0), (800.0, 300.0), (600.0, 300.0)]),
        ("1", [(900.0, 100.0), (1000.0, 400.0)]),  # two opposite corners
        ("2", [(100.0, 600.0), (500.0, 800.0)]),  # the box of an ellipse
        ("5", [(1200.0, 1200.0), (1300.0, 1300.0)]),  # a point set
        ("Polygon", [(0.0, 0.0), (50.0, 0.0), (0.0, 50.0)]),  # a name, as other writers put it
    ]
    path = write(tmp_path, imagescope([({}, regions)]))
    out = read_annotation_file(path, ImportSettings(format="aperio", point_radius_um=5.0), mpp=0.25)
    assert out.item.tolist() == [f"Annotation 1 Region {j}" for j in range(1, 7)]
    assert set(out.class_name) == {"lesion"}
    geoms = out.geometry.tolist()
    assert geoms[0].equals(shapely.Polygon(SQUARE))
    assert geoms[1].area == pytest.approx(200 * 200)
    assert geoms[2].equals(shapely.box(900, 100, 1000, 400))
    assert geoms[3].area == pytest.approx(math.pi * 200 * 100, rel=0.005)
    assert geoms[3].bounds == pytest.approx((100, 600, 500, 800))
    assert geoms[4].geom_type == "MultiPolygon" and len(geoms[4].geoms) == 2
    assert geoms[4].area == pytest.approx(2 * math.pi * 20.0**2, rel=0.01)  # 5 um at 0.25
    assert geoms[5].area == pytest.approx(50 * 50 / 2)


def test_negative_region_is_cut_out_of_the_positive_it_lies_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    far = [(2000.0, 2000.0), (2100.0, 2000.0), (2100.0, 2100.0)]
    layers = [
        ({}, [("0", SQUARE), ("0", HOLE, {"NegativeROA": "1"})]),
        (
            {},
            [("0", far, {"NegativeROA": "1"}), ("0", [(600.0, 0.0), (700.0, 0.0), (650.0, 90.0)])],
        ),
    ]
    path = write(tmp_path, imagescope(layers))
    with caplog.at_level(logging.WARNING):
        out = read_annotation_file(path, ImportSettings())
    assert len(out) == 2  # the holes are not rows of their own
    square = out.geometry[0]
    assert square.area == pytest.approx(400 * 400 - 100 * 100)
    assert not square.contains(shapely.Point(250, 250))
    assert out.geometry[1].area == pytest.approx(100 * 90 / 2)  # not touched by either hole
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: 1 negative region(s) (NegativeROA=1) overlap no positive region, left out: "
        "Annotation 2 Region 1"
    ]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("none", ["lesion", "lesion", "lesion"]),
        ("name", ["Tumor", "Tumor", "lesion"]),
        ("text", ["DCIS", "lesion", "lesion"]),
        ("attribute:Grade", ["G3", "G2", "lesion"]),
    ],
)
def test_layers_as_classes(tmp_path: Path, how: str, expected: list[str]) -> None:
    text = imagescope(
        [
            ({"Name": "Tumor"}, [("0", SQUARE, {"Text": "DCIS"}), ("1", HOLE)]),
            ({"Name": ""}, [("0", [(600.0, 0.0), (700.0, 0.0), (650.0, 90.0)])]),
        ]
    )
    root = ET.fromstring(text)
    layer1 = root.find("Annotation")
    assert layer1 is not None
    ET.SubElement(layer1.find("Attributes"), "Attribute", {"Name": "Grade", "Value": "G2"})
    region1 = layer1.find("Regions/Region")
    assert region1 is not None
    ET.SubElement(
        ET.SubElement(region1, "Attributes"), "Attribute", {"Name": "Grade", "Value": "G3"}
    )
    path = write(tmp_path, ET.tostring(root, encoding="unicode"))
    out = read_annotation_file(path, ImportSettings(aperio_class=how))
    assert out.class_name.tolist() == expected


def test_bad_aperio_class_is_refused() -> None:
    for how in ("layer", "attribute:"):
        with pytest.raises(AnnotationError, match="aperio_class"):
            ImportSettings(aperio_class=how)


def test_microns_per_pixel_mismatch_is_one_warning_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, imagescope([({}, [("0", SQUARE)])], mpp=0.252))
    with caplog.at_level(logging.WARNING):
        read_annotation_file(path, ImportSettings(), mpp=0.2505)  # 0.6%: fine
        read_annotation_file(path, ImportSettings(scale=1 / 32), mpp=0.252 * 32)  # scaled: fine
        assert not caplog.records
        read_annotation_file(path, ImportSettings(), mpp=0.5)
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith(f"{path}: MicronsPerPixel 0.252 is -49.6% off the slide's 0.5 um/px")
    assert "\n" not in message


def test_nominal_mpp_of_lesion_slides_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import pandas as pd

    path = write(tmp_path, imagescope([({}, [("0", SQUARE)])], mpp=0.252))
    sheet = pd.DataFrame(
        {"slide_id": ["a"], "patient_id": ["p"], "path": ["a.svs"], "annotation": [str(path)]}
    )
    with caplog.at_level(logging.WARNING):
        assert lesion_slides(sheet, None) == {"a"}
        assert not caplog.records
        read_cohort_annotations(sheet, None, mpps={"a": 1.0})
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<Annotations><Annotation><Regions><Region Type='0'><Vertices/></Region></Regions></Annotation></Annotations>",
         r"no annotations in the file \(1 with no area: Annotation 1 Region 1\)"),
        ("<Annotations><Annotation><Regions><Region Type='7'/></Regions></Annotation></Annotations>",
         "Annotation 1 Region 1: unknown region Type '7'"),
        ("<Annotations><Annotation><Regions><Region><Vertices><Vertex X='a' Y='1'/></Vertices></Region></Regions></Annotation></Annotations>",
         "Annotation 1 Region 1: a <Vertex> X or Y is not a number"),
        ("<Annotations MicronsPerPixel='0.25'/>", "no <Annotation> layers"),
        ("<Annotations><Annotation/></Annotations>", "no annotations in the file"),
    ],
)  # fmt: skip
def test_malformed_file_is_one_error_line(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AnnotationError, match=match) as err:
        read_annotation_file(path, ImportSettings())
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_arrows_and_rulers_are_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path, imagescope([({}, [("0", SQUARE), ("3", SQUARE[:2]), ("4", SQUARE[:2])])])
    )
    with caplog.at_level(logging.WARNING):
        out = read_annotation_file(path, ImportSettings())
    assert out.item.tolist() == ["Annotation 1 Region 1"]
    assert "2 arrow or ruler region(s) left out" in caplog.records[0].getMessage()


def test_real_imagescope_file_areas_match_area_microns(aperio_xml: Path) -> None:
    """ImageScope's ``AreaMicrons`` is the signed (shoelace) area of the vertices: for the
    twisted outline (a small loop drawn the other way round) it subtracts the loop, which the
    repaired polygon counts as area, so that one agrees to 1%, the others to 0.01%."""
    out = read_annotation_file(aperio_xml, ImportSettings(), mpp=0.252)
    regions = list(ET.parse(aperio_xml).getroot().iter("Region"))
    assert detect_format(aperio_xml) == "aperio"
    assert out.item.tolist() == [
        "Annotation 1 Region 1",
        "Annotation 3 Region 1",
        "Annotation 4 Region 1",
    ]
    assert len(regions) == 3
    for geom, region in zip(out.geometry, regions, strict=True):
        area_um2 = float(region.get("AreaMicrons", "nan"))
        raw = shapely.Polygon(
            [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
        )
        assert raw.area * 0.252**2 == pytest.approx(area_um2, rel=1e-4)  # the signed area
        assert geom.is_valid
        assert geom.area * 0.252**2 == pytest.approx(area_um2, rel=1e-4 if raw.is_valid else 0.01)
    assert not raw.is_valid and out.geometry[2].area > raw.area  # the loop counts as area
    assert set(out.class_name) == {"lesion"}
    named = read_annotation_file(aperio_xml, ImportSettings(aperio_class="attribute:CaP"))
    assert set(named.class_name) == {"lesion"}  # its CaP attribute has no value


def test_real_imagescope_outlines_as_points_sit_at_their_centroids(aperio_xml: Path) -> None:
    outlines = read_annotation_file(aperio_xml, ImportSettings(), mpp=0.252)
    points = read_annotation_file(
        aperio_xml, ImportSettings(as_points="centroid", point_radius_um=4.0), mpp=0.252
    )
    assert points.item.tolist() == outlines.item.tolist()
    for outline, disc in zip(outlines.geometry, points.geometry, strict=True):
        assert disc.centroid.distance(outline.centroid) < 0.01  # px
        radius = 4.0 / 0.252
        assert disc.area == pytest.approx(np.pi * radius**2, rel=0.01)
    with pytest.raises(AnnotationError, match=r"Annotation 1 Region 1 \(as_points\): point"):
        read_annotation_file(aperio_xml, ImportSettings(as_points="centroid"))  # no mpp
