"""ASAP XML (Camelyon16), streamed annotation by annotation, with nested groups.

Layout::

    <ASAP_Annotations>
      <Annotations>
        <Annotation Name="A" Type="Polygon" PartOfGroup="tumor_core">
          <Coordinates><Coordinate Order="0" X="..." Y="..."/>...</Coordinates>
      <AnnotationGroups>
        <Group Name="tumor_core" PartOfGroup="tumor"/>
        <Group Name="tumor" PartOfGroup="None"/>

Class of an annotation: its group's chain (the group, the group it is part of, and so on up
to ``None``) is walked from the annotation's own group, and the first group the mapping knows
gives the class: ``_2``, ``Exclusion``, ``Exclude`` give :data:`EXCLUDE` (cut out of the
lesions); ``_0``, ``_1``, ``Tumor``, ``Tumour`` give ``default_class``. Where no group of the
chain is known, the class is the annotation's own group (``default_class`` where it has none
or ``None``). So ``tumor_core`` part of ``tumor`` is a lesion, a sub-group of ``_2`` is cut
out, and a flat group ``stroma`` is the class ``stroma``. A cycle of ``PartOfGroup`` is an
:class:`AnnotationError` naming the group. Types ``Dot`` and ``PointSet`` are discs of
``point_radius_um``; the others are polygons of their coordinates in ``Order``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from histodetect.annotations.formats import (
    EXCLUDE,
    ImportSettings,
    StrayItem,
    _discs,
    _polygonal,
    _ring,
    _table,
)
from histodetect.annotations.xml_stream import END, stream_xml
from histodetect.errors import AnnotationError

EXCLUDE_GROUPS = frozenset({"_2", "exclusion", "exclude"})
"""Group names (lower case) of regions cut out of the lesions."""
LESION_GROUPS = frozenset({"_0", "_1", "tumor", "tumour"})
"""Group names (lower case) of ``default_class`` lesions."""
NO_GROUP = frozenset({"none", ""})
"""``PartOfGroup`` values that mean no group (the top of a chain)."""


def read_asap_xml(path: Path, settings: ImportSettings, mpp: float | None = None) -> pd.DataFrame:
    """ASAP XML into ``class_name, geometry, item`` (classes by the module's group rule)."""
    rows: list[tuple[str, BaseGeometry, str]] = []  # (own group, geometry, item)
    stray: list[str] = []
    parents: dict[str, str] = {}
    n_annotations = 0
    for event, ancestors, element in stream_xml(path, frozenset({"Annotation", "Group"})):
        if event != END:
            continue
        if element.tag == "Group" and any(a.tag == "AnnotationGroups" for a in ancestors):
            parents[element.get("Name") or ""] = element.get("PartOfGroup") or ""
        elif element.tag == "Annotation":
            n_annotations += 1
            item = f"Annotation {n_annotations} ({element.get('Name', '')!r})"
            try:
                geom = annotation_geometry(element, settings, mpp, path, item)
            except StrayItem:
                stray.append(item)
                continue
            rows.append((element.get("PartOfGroup", "") or "", geom, item))
    if not n_annotations:
        raise AnnotationError(path, "no <Annotation> elements")
    check_group_cycles(parents, path)
    return _table(
        [(group_class(g, parents, settings), geom, item) for g, geom, item in rows], path, stray
    )


def annotation_geometry(
    element: ET.Element, settings: ImportSettings, mpp: float | None, path: Path, item: str
) -> BaseGeometry:
    """The area of one ``<Annotation>``: a polygon of its coordinates, or discs of its points."""
    coords = element.findall(".//Coordinate")
    if not coords:
        raise StrayItem(path, f"{item}: no <Coordinate> elements")
    try:
        coords.sort(key=lambda c: float(c.get("Order", 0)))
    except ValueError:
        raise AnnotationError(path, f"{item}: a <Coordinate> Order is not a number") from None
    xy = [(c.get("X"), c.get("Y")) for c in coords]
    if any(x is None or y is None for x, y in xy):
        raise AnnotationError(path, f"{item}: a <Coordinate> lacks X or Y")
    if (element.get("Type") or "Polygon").lower() in ("dot", "pointset"):
        try:
            pts = [(float(x) * settings.scale, float(y) * settings.scale) for x, y in xy]  # type: ignore[arg-type]
        except ValueError:
            raise AnnotationError(path, f"{item}: a <Coordinate> X or Y is not a number") from None
        return _discs(pts, mpp, settings, path, item)
    return _polygonal(shapely.Polygon(_ring(xy, path, item, settings.scale)), path, item)


def group_class(group: str, parents: dict[str, str], settings: ImportSettings) -> str:
    """The class of an annotation of ``group``: the first known group up its chain, else the
    group itself (``default_class`` for no group); ``parents`` maps a group to its parent."""
    name, seen = group, set()
    while name.lower() not in NO_GROUP and name not in seen:
        if name.lower() in EXCLUDE_GROUPS:
            return EXCLUDE
        if name.lower() in LESION_GROUPS:
            return settings.default_class
        seen.add(name)
        name = parents.get(name, "")
    return settings.default_class if group.lower() in NO_GROUP else group


def check_group_cycles(parents: dict[str, str], path: Path) -> None:
    """Raise naming the first group whose ``PartOfGroup`` chain comes back to a group."""
    for start in parents:
        name, seen = start, []
        while name.lower() not in NO_GROUP and name in parents:
            if name in seen:
                chain = " -> ".join([*seen[seen.index(name) :], name])
                raise AnnotationError(
                    path, f"Group {name!r}: PartOfGroup chain is a cycle ({chain})"
                )
            seen.append(name)
            name = parents[name]
