"""Tile labels from their overlap with ground-truth lesion boxes or outlines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from histodetect.annotations.formats import EXCLUDE
from histodetect.annotations.geometry import tile_box_overlap, tile_geometry_overlap
from histodetect.columns import LABEL_COLUMNS
from histodetect.errors import AnnotationError

OVERLAPS = ("iou", "coverage", "point")


@dataclass(frozen=True)
class LabelSettings:
    """How overlap turns into a label (the ``labels`` section of the config).

    ``overlap`` is ``"iou"`` (IoU of tile and one annotation, the DigiLut write-up's rule) or
    ``"coverage"`` (fraction of the tile inside lesion outlines). A tile is positive at
    ``overlap >= positive``, negative at ``overlap <= negative`` and ignored (-1) between.
    With ``classes`` (annotation class names), a positive tile gets ``1 + index`` of the class
    it overlaps most, with ``class_name`` (``background``, ``ignored`` or the class) and
    ``<overlap>_<class>`` columns beside it; without, every annotation is
    lesion (label 1). Regions of class ``exclude`` are cut out of the lesions.

    ``overlap="point"`` is for point annotations (mitosis centres, drawn as discs of
    ``annotation_import.point_radius_um``): a tile is positive when a centre lies within
    that radius of the tile's centre, ignored when the disc only grazes it (touches the
    tile without the centre being that close) and negative otherwise; the thresholds are
    not used. Annotations of ``negative_classes`` (look-alikes, e.g. ``nonmitosis``) are
    not lesions: the tiles that hold one (same rule; in the other modes, any overlap) and
    no lesion are negatives marked ``hard``, which sampling keeps first.
    """

    overlap: str = "coverage"
    positive: float = 0.5
    negative: float = 0.0
    classes: Sequence[str] | None = None
    negative_classes: Sequence[str] = ()

    def check(self) -> None:
        """Raise ``ValueError`` for an unknown overlap, crossed thresholds or bad classes."""
        if self.overlap not in OVERLAPS:
            raise ValueError(f"unknown overlap {self.overlap!r}; use one of {OVERLAPS}")
        if self.overlap == "point" and self.classes is not None:
            raise ValueError("labels.overlap point labels one lesion class; unset labels.classes")
        if set(self.negative_classes) & set(self.classes or ()):
            raise ValueError("labels.negative_classes and labels.classes share a class")
        if self.negative > self.positive:
            raise ValueError("label thresholds need negative <= positive")
        if self.classes is not None and (not self.classes or EXCLUDE in self.classes):
            raise ValueError(f"labels.classes must be a non-empty list without {EXCLUDE!r}")


def _tile_boxes(tiles: pd.DataFrame) -> np.ndarray:
    return np.stack(
        [tiles.x, tiles.y, tiles.x + tiles["size"], tiles.y + tiles["size"]], axis=1
    ).astype(np.float64)


def point_hits(tiles: np.ndarray, geometries: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Which tiles hold a point annotation and which it only grazes.

    Each geometry is a point's disc (:func:`histodetect.annotations.formats.read_point_csv`):
    its centre is the middle of its bounds, its radius half its width. Returns ``(holds,
    touches)`` over the tiles ``(n, 4)``: the centre lies within the radius of the tile's
    centre (or, where no tile's centre is that close, e.g. at the slide's edge, in the tile
    whose centre is nearest among those it lies in); the disc reaches the tile at all.
    """
    holds = np.zeros(len(tiles), bool)
    touches = np.zeros(len(tiles), bool)
    if not len(geometries) or not len(tiles):
        return holds, touches
    bounds = shapely.bounds(np.asarray(geometries, dtype=object)).reshape(-1, 4)
    centre = (bounds[:, :2] + bounds[:, 2:]) / 2
    radius = (bounds[:, 2] - bounds[:, 0]) / 2
    mid = (tiles[:, :2] + tiles[:, 2:]) / 2
    for (px, py), r in zip(centre, radius, strict=True):
        dist = np.hypot(mid[:, 0] - px, mid[:, 1] - py)
        near = dist <= r
        if not near.any():  # near the slide's edge no tile centre comes that close:
            inside = (
                (tiles[:, 0] <= px) & (px < tiles[:, 2]) & (tiles[:, 1] <= py) & (py < tiles[:, 3])
            )
            if inside.any():  # the tile holding it whose centre is nearest
                near = inside & (dist == dist[inside].min())
        holds |= near
        gap_x = np.maximum(np.maximum(tiles[:, 0] - px, px - tiles[:, 2]), 0)
        gap_y = np.maximum(np.maximum(tiles[:, 1] - py, py - tiles[:, 3]), 0)
        touches |= np.hypot(gap_x, gap_y) <= r
    return holds, touches


def _label_points(
    tile_xyxy: np.ndarray, annotations: pd.DataFrame, settings: LabelSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (1, 0, -1) and the ``hard`` flag of tiles from point annotations."""
    if "geometry" not in annotations.columns:
        raise ValueError("labels.overlap point needs point annotations, not bare boxes")
    look_alike = annotations.class_name.isin(settings.negative_classes).to_numpy()
    lesion = ~look_alike & (annotations.class_name != EXCLUDE).to_numpy()
    holds, touches = point_hits(tile_xyxy, list(annotations.geometry[lesion]))
    label = np.where(holds, 1, np.where(touches, -1, 0))
    hard_holds, _ = point_hits(tile_xyxy, list(annotations.geometry[look_alike]))
    return label, hard_holds & (label == 0)


def _lesions(
    annotations: pd.DataFrame, classes: Sequence[str] | None, look_alikes: Sequence[str] = ()
) -> dict[str, list]:
    """Lesion geometries by class (one class ``lesion`` if binary), exclusions cut out."""
    excl = annotations[annotations.class_name == EXCLUDE]
    lesion = annotations[
        (annotations.class_name != EXCLUDE) & ~annotations.class_name.isin(look_alikes)
    ]
    if classes is not None:
        unknown = lesion[~lesion.class_name.isin(classes)]
        if len(unknown):
            a = unknown.iloc[0]
            raise AnnotationError(
                a.get("source", "annotations"),
                f"{a.get('item', '')}: class {a.class_name!r} is not in labels.classes {list(classes)}",
            )
    cut = shapely.union_all(np.asarray(excl.geometry, dtype=object)) if len(excl) else None
    groups: dict[str, list] = {}
    keys = lesion.class_name if classes is not None else pd.Series("lesion", index=lesion.index)
    for cls, geom in zip(keys, lesion.geometry, strict=True):
        groups.setdefault(cls, []).append(geom if cut is None else geom.difference(cut))
    return groups


def label_tiles(
    tiles: pd.DataFrame, annotations: pd.DataFrame, settings: LabelSettings
) -> pd.DataFrame:
    """Add ``iou``, ``coverage`` and ``label`` (and with ``negative_classes``, ``hard``) to a
    slide's tile table.

    Args:
        tiles: the slide's tile table.
        annotations: either boxes ``x1,y1,x2,y2`` (one lesion class) or the internal form
            with ``class_name`` and ``geometry`` (see :mod:`histodetect.annotations.lesions`).
        settings: thresholds and classes.
    """
    settings.check()
    tile_xyxy = _tile_boxes(tiles)
    out = tiles.copy()
    if "geometry" not in annotations.columns:
        if settings.classes is not None:
            raise ValueError("labels.classes needs annotations with class names, not bare boxes")
        box_xyxy = annotations[["x1", "y1", "x2", "y2"]].to_numpy(np.float64).reshape(-1, 4)
        iou, coverage = tile_box_overlap(tile_xyxy, box_xyxy)
        per_class = {"lesion": (iou, coverage)}
    else:
        groups = _lesions(annotations, settings.classes, settings.negative_classes)
        iou, coverage = tile_geometry_overlap(tile_xyxy, [g for gs in groups.values() for g in gs])
        names = settings.classes or []
        per_class = {c: tile_geometry_overlap(tile_xyxy, groups.get(c, [])) for c in names}
    pick = 0 if settings.overlap == "iou" else 1
    value = (iou, coverage)[pick]
    extra = []
    label = np.full(len(tiles), -1, np.int64)
    label[value <= settings.negative] = 0
    hard = np.zeros(len(tiles), bool)
    if settings.overlap == "point":
        label, hard = _label_points(tile_xyxy, annotations, settings)
    elif settings.classes is None:
        label[value >= settings.positive] = 1
    else:
        stacked = np.stack([per_class[c][pick] for c in settings.classes], axis=1)
        best = stacked.argmax(axis=1)
        hit = stacked.max(axis=1) >= settings.positive
        label[hit] = best[hit] + 1
        names = np.array(["ignored", "background", *settings.classes], dtype=object)
        out["class_name"] = names[label + 1]
        extra.append("class_name")
        for c in settings.classes:
            extra.append(f"{settings.overlap}_{c}")
            out[extra[-1]] = per_class[c][pick].astype(np.float32)
    if settings.negative_classes:
        if settings.overlap != "point" and "geometry" in annotations.columns:
            look_alike = annotations[annotations.class_name.isin(settings.negative_classes)]
            hard = tile_geometry_overlap(tile_xyxy, list(look_alike.geometry))[1] > 0
        out["hard"] = hard & (label == 0)
        extra.append("hard")
    out["iou"] = iou.astype(np.float32)
    out["coverage"] = coverage.astype(np.float32)
    out["label"] = label
    return out[LABEL_COLUMNS + extra]
