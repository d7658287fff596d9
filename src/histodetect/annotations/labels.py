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
    """

    overlap: str = "coverage"
    positive: float = 0.5
    negative: float = 0.0
    classes: Sequence[str] | None = None

    def check(self) -> None:
        """Raise ``ValueError`` for an unknown overlap, crossed thresholds or bad classes."""
        if self.overlap not in ("iou", "coverage"):
            raise ValueError(f"unknown overlap {self.overlap!r}; use 'iou' or 'coverage'")
        if self.negative > self.positive:
            raise ValueError("label thresholds need negative <= positive")
        if self.classes is not None and (not self.classes or EXCLUDE in self.classes):
            raise ValueError(f"labels.classes must be a non-empty list without {EXCLUDE!r}")


def _tile_boxes(tiles: pd.DataFrame) -> np.ndarray:
    return np.stack(
        [tiles.x, tiles.y, tiles.x + tiles["size"], tiles.y + tiles["size"]], axis=1
    ).astype(np.float64)


def _lesions(annotations: pd.DataFrame, classes: Sequence[str] | None) -> dict[str, list]:
    """Lesion geometries by class (one class ``lesion`` if binary), exclusions cut out."""
    excl = annotations[annotations.class_name == EXCLUDE]
    lesion = annotations[annotations.class_name != EXCLUDE]
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
    """Add ``iou``, ``coverage`` and ``label`` to a slide's tile table.

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
        groups = _lesions(annotations, settings.classes)
        iou, coverage = tile_geometry_overlap(tile_xyxy, [g for gs in groups.values() for g in gs])
        names = settings.classes or []
        per_class = {c: tile_geometry_overlap(tile_xyxy, groups.get(c, [])) for c in names}
    pick = 0 if settings.overlap == "iou" else 1
    value = (iou, coverage)[pick]
    extra = []
    label = np.full(len(tiles), -1, np.int64)
    label[value <= settings.negative] = 0
    if settings.classes is None:
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
    out["iou"] = iou.astype(np.float32)
    out["coverage"] = coverage.astype(np.float32)
    out["label"] = label
    return out[LABEL_COLUMNS + extra]
