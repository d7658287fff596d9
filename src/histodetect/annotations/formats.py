"""Readers of per-slide annotation files into one form: class name and shapely geometry.

Every reader returns a table with columns ``class_name``, ``geometry`` (a valid shapely
polygon or multipolygon in level-0 pixels of the slide file, after ``scale``) and ``item``
(where in the file it came from, e.g. ``feature 3``), and raises :class:`AnnotationError`
naming the file and item for anything it cannot use. Points become discs of ``radius_um``.

Class conventions: NCRF ``negative`` outlines and Camelyon16 ASAP group ``_2`` (or
``Exclusion``) are regions *excluded* from the lesion; they get the class :data:`EXCLUDE`.
NCRF ``positive`` outlines and ASAP groups ``_0``/``_1`` get ``default_class`` (nested ASAP
groups: :mod:`histodetect.annotations.asap`). Aperio ImageScope XML is read by
:mod:`histodetect.annotations.aperio`.
"""

from __future__ import annotations

import json
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely import affinity
from shapely.errors import ShapelyError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from histodetect.errors import AnnotationError, name_some

EXCLUDE = "exclude"
FORMATS = ("digilut", "geojson", "asap", "aperio", "ncrf", "points")
log = logging.getLogger(__name__)

GEOMETRY_COLUMNS = ["class_name", "geometry", "item"]

QUPATH_IGNORE, QUPATH_REGION = "ignore*", "region*"
"""QuPath's built-in classes: ``Ignore*`` is cut out of the lesions (class ``exclude``);
``Region*`` marks a region of interest, not a lesion, and is left out."""


class StrayItem(AnnotationError):
    """A drawing with no area (a stray click of under 3 vertices, a line, an empty region):
    left out and counted, one warning line per file, where a reader meets it."""


@dataclass(frozen=True)
class ImportSettings:
    """How annotation files are read (the ``annotation_import`` section of the config).

    Attributes:
        format: one of :data:`FORMATS`, or ``auto`` (by extension, then by content).
        scale: multiplies every coordinate (``1/32`` for level-0 outlines on a level-5 file).
        point_radius_um: radius of the disc drawn around each point annotation.
        default_class: class name of annotations that carry none.
        aperio_class: where an ImageScope region's class comes from: ``none`` (every region
            ``default_class``), ``name`` (its layer's ``Name``), ``text`` (its ``Text``) or
            ``attribute:KEY`` (the ``Value`` of its or its layer's attribute ``KEY``).
        edge_tolerance: how far past the slide's edge an outline may reach and be clipped to
            it, as a share of the slide's shorter side; further is a wrong scale or level.
        as_points: ``centroid`` turns every outline into a point at its centroid (a disc of
            ``point_radius_um``, as point files are read): outlines drawn for segmentation,
            e.g. every nucleus, train the point detector. ``none`` keeps the outlines.
        points_mode: set by the workflow in points mode (``labels.overlap: point``), not a
            config key: QuPath points beside outlines are kept as points, not left out.
    """

    format: str = "auto"
    scale: float = 1.0
    point_radius_um: float = 16.0
    default_class: str = "lesion"
    aperio_class: str = "none"
    edge_tolerance: float = 0.05
    as_points: str = "none"
    points_mode: bool = False

    def __post_init__(self) -> None:
        if self.format not in ("auto", *FORMATS):
            raise AnnotationError("config", f"annotation format {self.format!r} not in {FORMATS}")
        if not self.scale > 0 or not self.point_radius_um > 0:
            raise AnnotationError("config", "annotation scale and point_radius_um must be > 0")
        if not 0 <= self.edge_tolerance <= 1:
            raise AnnotationError("config", "annotation_import.edge_tolerance must be in [0, 1]")
        if self.as_points not in ("none", "centroid"):
            raise AnnotationError(
                "config",
                f"annotation_import.as_points must be none or centroid, not {self.as_points!r}",
            )
        how = self.aperio_class
        if how not in ("none", "name", "text") and not (
            how.startswith("attribute:") and how[len("attribute:") :]
        ):
            raise AnnotationError(
                "config", f"aperio_class {how!r} is not none, name, text or attribute:KEY"
            )


def detect_format(path: Path) -> str:
    """Format of an annotation file from its extension, looking inside ``.json``/``.csv``
    (keys, header) and ``.xml`` (root element: ImageScope ``Annotations`` or ASAP)."""
    suffix = path.suffix.lower()
    if suffix == ".geojson":
        return "geojson"
    if suffix == ".xml":
        return "aperio" if is_aperio_root(_xml_root(path)) else "asap"
    if suffix == ".json":
        data = _load_json(path)
        return (
            "ncrf" if isinstance(data, dict) and {"positive", "negative"} & set(data) else "geojson"
        )
    if suffix in (".csv", ".tsv", ".txt"):
        header = _first_line(path).lower().replace("\t", ",").split(",")
        return "digilut" if "filename" in [h.strip() for h in header] else "points"
    raise AnnotationError(
        path, f"cannot tell the annotation format from {suffix!r}; set it to one of {FORMATS}"
    )


def is_aperio_root(tag: str) -> bool:
    """Whether an XML root tag is ImageScope's ``Annotations`` (ASAP's: ``ASAP_Annotations``)."""
    return tag.rsplit("}", 1)[-1] == "Annotations"


def _xml_root(path: Path) -> str:
    """The root element's tag, read without parsing the rest ('' if not readable XML)."""
    try:
        for _, element in ET.iterparse(path, events=("start",)):
            return element.tag
    except (ET.ParseError, OSError):
        pass
    return ""


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline()
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(path, f"cannot read the file ({err})") from None


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark, as Windows tools write
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(path, f"cannot read the file ({err})") from None
    if not text.strip():
        raise AnnotationError(path, "file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(path, f"invalid JSON at line {err.lineno}: {err.msg}") from None


def _polygonal(geom: BaseGeometry, path: Path, item: str) -> BaseGeometry:
    """A valid (multi)polygon of positive area from ``geom``, or an error naming the item."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
        geom = shapely.union_all(parts) if parts else shapely.Polygon()
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.area <= 0:
        raise StrayItem(path, f"{item}: outline has no area ({geom.geom_type})")
    bounds = shapely.bounds(geom)
    if not all(math.isfinite(b) for b in bounds):
        raise AnnotationError(path, f"{item}: coordinate not a finite number")
    return geom


def _ring(coords: Any, path: Path, item: str, scale: float) -> list[tuple[float, float]]:
    """``[[x, y], ...]`` as scaled float pairs, or an error naming the item."""
    try:
        pts = [(float(x) * scale, float(y) * scale) for x, y, *_ in coords]
    except (TypeError, ValueError):
        raise AnnotationError(path, f"{item}: vertices are not [x, y] number pairs") from None
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in pts):
        raise AnnotationError(path, f"{item}: coordinate not a finite number (NaN or inf)")
    if len(pts) < 3:
        raise StrayItem(path, f"{item}: {len(pts)} vertices, a polygon needs at least 3")
    return pts


def _table(
    rows: Iterable[tuple[str, BaseGeometry, str]], path: Path, stray: Iterable[str] = ()
) -> pd.DataFrame:
    """The rows read; the items with no area (``stray``) counted in one warning line."""
    table = pd.DataFrame(list(rows), columns=GEOMETRY_COLUMNS)
    stray = list(stray)
    if stray:
        log.warning("%s: %d item(s) with no area (a point beside outlines, a line, under 3 "
                    "vertices or empty) left out: %s", path, len(stray), name_some(stray))  # fmt: skip
    if table.empty:
        also = f" ({len(stray)} with no area: {name_some(stray)})" if stray else ""
        raise AnnotationError(path, f"no annotations in the file{also}")
    return table


def read_ncrf_json(path: Path, settings: ImportSettings, mpp: float | None = None) -> pd.DataFrame:
    """NCRF outlines ``{"positive": [{"name", "vertices"}], "negative": [...]}``."""
    data = _load_json(path)
    if not isinstance(data, dict) or not {"positive", "negative"} & set(data):
        raise AnnotationError(path, 'not NCRF JSON (expected keys "positive" and "negative")')
    rows, stray = [], []
    for key, cls in (("positive", settings.default_class), ("negative", EXCLUDE)):
        entries = data.get(key, [])
        if not isinstance(entries, list):
            raise AnnotationError(path, f'"{key}" is not a list')
        for i, entry in enumerate(entries):
            item = f"{key}[{i}]"
            if not isinstance(entry, dict) or "vertices" not in entry:
                raise AnnotationError(path, f'{item}: no "vertices"')
            try:
                ring = _ring(entry["vertices"], path, item, settings.scale)
                rows.append((cls, _polygonal(shapely.Polygon(ring), path, item), item))
            except StrayItem:
                stray.append(item)
    return _table(rows, path, stray)


def read_asap_xml(path: Path, settings: ImportSettings, mpp: float | None = None) -> pd.DataFrame:
    """ASAP XML (Camelyon16): :func:`histodetect.annotations.asap.read_asap_xml`."""
    from histodetect.annotations.asap import read_asap_xml as read  # it builds on this module

    return read(path, settings, mpp)


def _discs(
    pts: list[tuple[float, float]],
    mpp: float | None,
    settings: ImportSettings,
    path: Path,
    item: str,
) -> BaseGeometry:
    """Discs of ``point_radius_um`` around points (needs the slide's mpp)."""
    if mpp is None or not mpp > 0:
        raise AnnotationError(path, f"{item}: point annotations need the slide's mpp")
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in pts):
        raise AnnotationError(path, f"{item}: coordinate not a finite number (NaN or inf)")
    radius = settings.point_radius_um / mpp
    return shapely.union_all([shapely.Point(p).buffer(radius, quad_segs=16) for p in pts])


def _feature_class(feature: dict[str, Any], default: str) -> str:
    props = feature.get("properties") or {}
    cls = props.get("classification")
    if isinstance(cls, dict):
        cls = cls.get("name")
    if isinstance(cls, str) and cls:
        return cls
    return default


def read_geojson(path: Path, settings: ImportSettings, mpp: float | None = None) -> pd.DataFrame:
    """QuPath GeoJSON: FeatureCollection, a bare list of features, or one feature.

    Polygons, multipolygons and rectangles (exported as polygons) keep their outline. Points
    and multipoints become discs in a file of points; beside outlines (a lesion class, not
    ``Ignore*``) they are left out and counted with the lines, unless ``as_points: centroid``
    (points mode) reads the outlines as points too. The class is
    ``properties.classification.name``.
    """
    data = _load_json(path)
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    else:
        features = data
    if not isinstance(features, list):
        raise AnnotationError(path, "not GeoJSON (expected a FeatureCollection or a feature list)")
    rows: list[tuple[int, str, BaseGeometry, str]] = []
    points: list[tuple[int, str, BaseGeometry, str]] = []
    stray: list[tuple[int, str]] = []
    regions = []
    for i, feature in enumerate(features, 1):
        item = f"feature {i}"
        if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
            raise AnnotationError(path, f"{item}: no geometry object")
        try:
            geom = affinity.scale(
                shape(feature["geometry"]), settings.scale, settings.scale, origin=(0, 0)
            )
        except (KeyError, ValueError, TypeError, AttributeError, IndexError, ShapelyError) as err:
            raise AnnotationError(path, f"{item}: invalid geometry ({err})") from None
        if not np.isfinite(shapely.get_coordinates(geom)).all():
            raise AnnotationError(path, f"{item}: coordinates are not finite numbers")
        cls = _feature_class(feature, settings.default_class)
        cls = EXCLUDE if cls.lower() == QUPATH_IGNORE else cls
        if cls.lower() == QUPATH_REGION:
            regions.append(item)
        elif geom.is_empty:  # e.g. a Point of no coordinates
            stray.append((i, item))
        elif geom.geom_type in ("Point", "MultiPoint"):
            points.append((i, cls, geom, item))
        else:
            try:
                rows.append((i, cls, _polygonal(geom, path, item), item))
            except StrayItem:
                stray.append((i, item))
    keep = settings.as_points == "centroid" or settings.points_mode
    if points and not keep and any(r[1] != EXCLUDE for r in rows):
        stray += [(i, item) for i, *_, item in points]  # box mode: points beside outlines
    else:
        for i, cls, geom, item in points:
            centres = [(p.x, p.y) for p in shapely.get_parts(geom)]
            rows.append((i, cls, _discs(centres, mpp, settings, path, item), item))
    if regions:
        log.warning("%s: %d Region* object(s) (QuPath's regions of interest, not lesions) left "
                    "out: %s", path, len(regions), name_some(regions))  # fmt: skip
    return _table([r[1:] for r in sorted(rows)], path, [s[1] for s in sorted(stray)])


def read_point_csv(path: Path, settings: ImportSettings, mpp: float | None = None) -> pd.DataFrame:
    """Points ``x,y[,class]`` (e.g. mitosis centres), each a disc of ``point_radius_um``."""
    try:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        df = pd.read_csv(path, sep=sep, dtype={"class": str}, index_col=False)
    except pd.errors.EmptyDataError:
        raise AnnotationError(path, "file is empty (expected a header x,y[,class])") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise AnnotationError(path, f"not a readable CSV ({err})") from None
    if not {"x", "y"} <= set(df.columns):
        raise AnnotationError(path, f"missing column x or y; have {name_some(df.columns)}")
    if df.empty:
        raise AnnotationError(path, "no annotations in the file")
    xy = df[["x", "y"]].apply(pd.to_numeric, errors="coerce").to_numpy(float) * settings.scale
    rows = []
    for i, (x, y) in enumerate(xy):
        item = f"row {i + 2}"
        if not (math.isfinite(x) and math.isfinite(y)):
            raise AnnotationError(path, f"{item}: x or y not a number ({df.x[i]!r}, {df.y[i]!r})")
        cls = df["class"][i] if "class" in df.columns and pd.notna(df["class"][i]) else None
        disc = _discs([(x, y)], mpp, settings, path, item)
        rows.append((cls or settings.default_class, disc, item))
    return _table(rows, path)


def read_aperio(
    path: Path, settings: ImportSettings, mpp: float | None = None, *, warn_mpp: bool = True
) -> pd.DataFrame:
    """Aperio ImageScope XML: :func:`histodetect.annotations.aperio.read_aperio_xml`."""
    from histodetect.annotations.aperio import read_aperio_xml  # it builds on this module

    return read_aperio_xml(path, settings, mpp, warn_mpp=warn_mpp)


READERS: dict[str, Callable[[Path, ImportSettings, float | None], pd.DataFrame]] = {
    "geojson": read_geojson,
    "asap": read_asap_xml,
    "aperio": read_aperio,
    "ncrf": read_ncrf_json,
    "points": read_point_csv,
}


def read_annotation_file(
    path: str | Path,
    settings: ImportSettings,
    *,
    mpp: float | None = None,
    fmt: str | None = None,
    warn_mpp: bool = True,
) -> pd.DataFrame:
    """Read one slide's annotation file into ``class_name, geometry, item``.

    Args:
        path: the file.
        settings: import options; ``fmt`` (e.g. from the sample sheet) overrides its format.
        mpp: the slide's level-0 microns per pixel (needed for point annotations; ImageScope
            files are checked against it).
        fmt: explicit format, one of :data:`FORMATS` (``digilut`` is read elsewhere).
        warn_mpp: False where ``mpp`` is a nominal stand-in, not the slide's.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(path, "annotation file not found")
    fmt = fmt or settings.format
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in READERS:
        raise AnnotationError(
            path, f"format {fmt!r} is not a per-slide outline format {tuple(READERS)}"
        )
    if fmt == "aperio":
        table = read_aperio(path, settings, mpp, warn_mpp=warn_mpp)
    else:
        table = READERS[fmt](path, settings, mpp)
    if settings.as_points == "centroid":
        return outlines_as_points(table, settings, mpp, path)
    return table


def outlines_as_points(
    table: pd.DataFrame, settings: ImportSettings, mpp: float | None, path: Path
) -> pd.DataFrame:
    """Each outline (not the cut-out ``exclude`` regions) as a disc of ``point_radius_um``
    around its centroid (a point file's disc gives the point back as its centroid)."""
    keep = table.class_name == EXCLUDE
    centres = shapely.centroid(np.asarray(table.geometry, dtype=object))
    discs = [
        g if k else _discs([(c.x, c.y)], mpp, settings, path, f"{item} (as_points)")
        for g, k, c, item in zip(table.geometry, keep, centres, table["item"], strict=True)
    ]
    return table.assign(geometry=pd.Series(discs, index=table.index, dtype=object))
