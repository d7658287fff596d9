"""Aperio ImageScope XML: ``<Annotations MicronsPerPixel=...>`` of layers with regions.

Layout::

    <Annotations MicronsPerPixel="0.252">
      <Annotation Id="1" Name="Tumor">          a layer (its Attributes name columns)
        <Attributes><Attribute Name="CaP" Value=""/></Attributes>
        <Regions>
          <Region Id="1" Type="0" Text="" NegativeROA="0" AreaMicrons="...">
            <Vertices><Vertex X="17104.4" Y="19233.6"/>...</Vertices>

Coordinates are level-0 pixels of the scanned slide (times ``annotation_import.scale``).
Region ``Type`` (ImageScope's numbers, or a name as other writers put it): 0 freehand
polygon; 1 rectangle (the polygon of its vertices, or the box of two opposite corners);
2 ellipse (inscribed in the box of its vertices); 5 point set (a disc of ``point_radius_um``
per vertex); 3 arrows and 4 rulers are lines, left out with one warning line. A region with
``NegativeROA="1"`` is a hole: it is cut out of the positive regions it overlaps.

The file is streamed (:mod:`histodetect.annotations.xml_stream`): each region is dropped once
its outline is kept, so a 200 MB file of every nucleus does not sit in memory as a tree.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import shapely
from shapely import affinity
from shapely.geometry.base import BaseGeometry

from histodetect.annotations.formats import (
    ImportSettings,
    StrayItem,
    _discs,
    _polygonal,
    _ring,
    _table,
    is_aperio_root,
)
from histodetect.annotations.xml_stream import END, START, stream_xml
from histodetect.errors import AnnotationError, name_some

log = logging.getLogger(__name__)

MPP_TOLERANCE = 0.01
"""A file's ``MicronsPerPixel`` this far (relative) from the slide's is one warning line."""
POLYGON, RECTANGLE, ELLIPSE, POINTS, LINE = "polygon", "rectangle", "ellipse", "points", "line"
REGION_TYPES = {
    "0": POLYGON, "freehand": POLYGON, "polygon": POLYGON,
    "1": RECTANGLE, "rectangle": RECTANGLE,
    "2": ELLIPSE, "ellipse": ELLIPSE,
    "3": LINE, "arrow": LINE, "4": LINE, "ruler": LINE, "line": LINE, "polyline": LINE,
    "5": POINTS, "pointset": POINTS, "points": POINTS, "point": POINTS,
}  # fmt: skip
"""Region ``Type`` values (lower case) and the shape each stands for."""


def region_class(layer: ET.Element, region: ET.Element, settings: ImportSettings) -> str:
    """Class name of a region by ``settings.aperio_class`` (``default_class`` where empty).

    ``none``: every region is ``default_class``; ``name``: the layer's ``Name``; ``text``: the
    region's ``Text``; ``attribute:KEY``: the ``Value`` of the region's, else the layer's,
    ``<Attribute Name="KEY">``.
    """
    value = class_value(region, settings.aperio_class, layer=False)
    if value is None:
        value = class_value(layer, settings.aperio_class, layer=True)
    return class_or_default(value, settings)


def class_value(element: ET.Element, how: str, *, layer: bool) -> str | None:
    """The raw class of a layer (``layer``) or of a region by ``aperio_class`` ``how``; None
    where this element does not give one (the region's then falls back to its layer's)."""
    if how == "name":
        return element.get("Name") if layer else None
    if how == "text":
        return None if layer else element.get("Text")
    if how.startswith("attribute:"):
        key = how.split(":", 1)[1]
        found = (
            a.get("Value")
            for a in element.findall("Attributes/Attribute")
            if a.get("Name") == key and a.get("Value")
        )
        return next(found, None)
    return None


def class_or_default(value: str | None, settings: ImportSettings) -> str:
    """``value`` stripped, or ``default_class`` where it is missing or blank."""
    return value.strip() if value and value.strip() else settings.default_class


def region_geometry(
    kind: str,
    xy: list[tuple[float, float]],
    mpp: float | None,
    settings: ImportSettings,
    path: Path,
    item: str,
) -> BaseGeometry:
    """The area of one region from its (scaled) vertices and its shape."""
    if kind == POINTS:
        return _discs(xy, mpp, settings, path, item)
    if kind == ELLIPSE or (kind == RECTANGLE and len(xy) == 2):
        if len(xy) < 2:
            raise AnnotationError(path, f"{item}: {len(xy)} vertices, a {kind} needs 2 corners")
        x1, y1, x2, y2 = shapely.MultiPoint(xy).bounds
        if kind == RECTANGLE:
            return _polygonal(shapely.box(x1, y1, x2, y2), path, item)
        disc = shapely.Point((x1 + x2) / 2, (y1 + y2) / 2).buffer(1.0, quad_segs=32)
        return _polygonal(affinity.scale(disc, (x2 - x1) / 2, (y2 - y1) / 2), path, item)
    return _polygonal(shapely.Polygon(_ring(xy, path, item, 1.0)), path, item)


def _vertices(region: ET.Element, path: Path, item: str, scale: float) -> list[tuple[float, float]]:
    try:
        xy = [
            (float(v.attrib["X"]) * scale, float(v.attrib["Y"]) * scale)
            for v in region.findall("Vertices/Vertex")
        ]
    except KeyError:
        raise AnnotationError(path, f"{item}: a <Vertex> lacks X or Y") from None
    except ValueError:
        raise AnnotationError(path, f"{item}: a <Vertex> X or Y is not a number") from None
    if not xy:
        raise StrayItem(path, f"{item}: no <Vertex> elements")
    if not all(math.isfinite(c) for p in xy for c in p):
        raise AnnotationError(path, f"{item}: coordinate not a finite number (NaN or inf)")
    return xy


def mpp_warning(path: Path, file_mpp: float, slide_mpp: float, scale: float) -> str | None:
    """One warning line when the file's ``MicronsPerPixel`` (over ``scale``) is more than
    :data:`MPP_TOLERANCE` from the slide's level-0 mpp, else None."""
    expected = file_mpp / scale
    off = expected / slide_mpp - 1
    if abs(off) <= MPP_TOLERANCE:
        return None
    scaled = f" over annotation scale {scale:g}" if scale != 1 else ""
    return (
        f"{path}: MicronsPerPixel {file_mpp:g}{scaled} is {off:+.1%} off the slide's "
        f"{slide_mpp:g} um/px; its vertices are read as the slide's level-0 pixels all the "
        "same: check that the file belongs to this slide and scan"
    )


def _file_mpp(root: ET.Element, path: Path) -> float | None:
    text = root.get("MicronsPerPixel")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(path, f"MicronsPerPixel {text!r} is not a number") from None
    return value if math.isfinite(value) and value > 0 else None


def read_aperio_xml(
    path: Path, settings: ImportSettings, mpp: float | None = None, *, warn_mpp: bool = True
) -> pd.DataFrame:
    """Aperio ImageScope XML into ``class_name, geometry, item``, streamed region by region.

    Args:
        path: the file.
        settings: import options (``scale``, ``point_radius_um``, ``aperio_class``).
        mpp: the slide's level-0 um/px: point sets need it, and it is compared with the file's
            ``MicronsPerPixel`` (one warning line past 1%).
        warn_mpp: False where ``mpp`` is a stand-in (a nominal value), not the slide's.
    """
    positives: list[list] = []
    negatives: list[tuple[BaseGeometry, str]] = []
    lines: list[str] = []
    stray: list[str] = []
    layer_rows: list[list] = []  # [class of the region or None, geometry, item] of one layer
    n_layers = n_regions = 0
    for event, ancestors, element in stream_xml(path, frozenset({"Annotation", "Region"})):
        depth = len(ancestors)
        if event == START and depth == 0:
            _check_root(element, path, settings, mpp, warn_mpp)
        elif event == START and depth == 1 and element.tag == "Annotation":
            n_layers, n_regions, layer_rows = n_layers + 1, 0, []
        elif event == END and depth == 1 and element.tag == "Annotation":
            layer_value = class_value(element, settings.aperio_class, layer=True)
            for row in layer_rows:
                row[0] = class_or_default(layer_value if row[0] is None else row[0], settings)
            positives += layer_rows
        elif (
            event == END
            and depth == 3
            and element.tag == "Region"
            and (ancestors[1].tag, ancestors[2].tag) == ("Annotation", "Regions")
        ):
            n_regions += 1
            item = f"Annotation {ancestors[1].get('Id', n_layers)} Region {element.get('Id', n_regions)}"  # fmt: skip
            raw = (element.get("Type") or "0").strip().lower()
            if raw not in REGION_TYPES:
                raise AnnotationError(path, f"{item}: unknown region Type {raw!r}")
            kind = REGION_TYPES[raw]
            if kind == LINE:
                lines.append(item)
                continue
            try:
                xy = _vertices(element, path, item, settings.scale)
                geom = region_geometry(kind, xy, mpp, settings, path, item)
            except StrayItem:
                stray.append(item)
                continue
            if element.get("NegativeROA", "0").strip() == "1" and kind != POINTS:
                negatives.append((geom, item))
            else:
                own = class_value(element, settings.aperio_class, layer=False)
                layer_rows.append([own, geom, item])
    if not n_layers:
        raise AnnotationError(path, "no <Annotation> layers")
    if lines:
        log.warning("%s: %d arrow or ruler region(s) left out (lines, not areas): %s",
                    path, len(lines), name_some(lines))  # fmt: skip
    _cut_holes(positives, negatives, path)
    return _table([tuple(row) for row in positives if not row[1].is_empty], path, stray)


def _check_root(
    root: ET.Element, path: Path, settings: ImportSettings, mpp: float | None, warn_mpp: bool
) -> None:
    """Refuse a root that is not ImageScope's; warn once where its mpp is not the slide's."""
    if not is_aperio_root(root.tag):
        raise AnnotationError(path, f"not ImageScope XML (root <{root.tag}>, not <Annotations>)")
    file_mpp = _file_mpp(root, path)
    if warn_mpp and file_mpp is not None and mpp is not None and mpp > 0:
        line = mpp_warning(path, file_mpp, mpp, settings.scale)
        if line:
            log.warning(line)


def _cut_holes(
    positives: list[list], negatives: list[tuple[BaseGeometry, str]], path: Path
) -> None:
    """Cut each negative region out of the positive regions it overlaps (in place)."""
    alone = []
    tree = shapely.STRtree([row[1] for row in positives])  # bounds of the uncut outlines
    for hole, item in negatives:
        hit = False
        for k in sorted(tree.query(hole)):
            row = positives[k]
            if row[1].intersection(hole).area > 0:
                row[1] = row[1].difference(hole)
                hit = True
        if not hit:
            alone.append(item)
    if alone:
        log.warning("%s: %d negative region(s) (NegativeROA=1) overlap no positive region, "
                    "left out: %s", path, len(alone), name_some(alone))  # fmt: skip
