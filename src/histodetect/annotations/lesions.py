"""Lesion annotations of a cohort: DigiLut box CSV and per-slide outline files, checked.

The internal form is a table ``slide_id, class_name, geometry, source, item``: one shapely
(multi)polygon per annotation in level-0 pixels of the slide file, with the file and the
place in it that it came from (for error messages). Boxes of the DigiLut CSV become
rectangles of class ``default_class``; per-slide files come from the sample sheet's optional
``annotation`` column (with optional ``annotation_format`` and ``annotation_scale``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from histodetect.annotations.formats import (
    EXCLUDE,
    ImportSettings,
    _polygonal,
    read_annotation_file,
)
from histodetect.errors import AnnotationError, name_some

ANNOTATION_COLUMNS = ["slide_id", "class_name", "geometry", "source", "item"]

DIGILUT_COLUMNS = ["filename", "x1", "x2", "y1", "y2"]

log = logging.getLogger(__name__)

UNKNOWN_SIDE = 1e12
"""The slide's width or height where a DigiLut CSV gives only the other (``max_x`` or ``max_y``)."""

BOX_INDEX_ROW_GROUP = 4096  # row groups with min/max slide ids: a filter skips the others


def read_digilut_csv(
    path: str | Path, slide_ids: Mapping[str, str], tolerance: float = 0.05
) -> pd.DataFrame:
    """Read level-0 boxes ``filename,x1,x2,y1,y2[,max_x,max_y]`` into ``slide_id,x1,y1,x2,y2``.

    Where ``max_x``/``max_y`` give the slide's size, boxes go through :func:`clip_to_slide`'s
    rule as outlines do: one crossing the edge is clipped (one warning line per file), one
    reaching more than ``tolerance`` of the slide's shorter side past it is refused. Without
    them, a box crossing the top or left edge is read as it is and clipped when its slide's
    tiles are labelled (rule ``label_tiles``, which knows the slide's size).

    Args:
        path: the CSV file.
        slide_ids: maps a ``filename`` value (the slide file's name, or its slide id) to a slide id.
        tolerance: ``annotation_import.edge_tolerance``.

    Raises:
        AnnotationError: naming the file and row, for a missing column, an unknown slide,
            a non-numeric or NaN coordinate, an empty box (x1 >= x2 or y1 >= y2), a box wholly
            left of or above the slide, or one refused by the clip rule.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"filename": str}, index_col=False)
    except pd.errors.EmptyDataError:
        raise AnnotationError(
            path, "file is empty (expected a header filename,x1,x2,y1,y2)"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise AnnotationError(path, f"not a readable CSV ({err})") from None
    missing = [c for c in DIGILUT_COLUMNS if c not in df.columns]
    if missing:
        raise AnnotationError(
            path, f"missing column(s) {name_some(missing)}; have {name_some(df.columns)}"
        )
    coords = ["x1", "x2", "y1", "y2"] + [c for c in ("max_x", "max_y") if c in df.columns]
    values = df[coords].apply(pd.to_numeric, errors="coerce")
    for i in range(len(df)):
        row = i + 2  # 1-based, after the header: the line number a person sees
        name = df.at[i, "filename"]
        if name not in slide_ids:
            raise AnnotationError(path, f"row {row}: slide {name!r} is not in the sample sheet")
        bad = [c for c in coords if not np.isfinite(values.at[i, c])]
        if bad:
            raise AnnotationError(
                path, f"row {row}: {', '.join(bad)} not a number ({df.loc[i, bad].tolist()})"
            )
        x1, x2, y1, y2 = (values.at[i, c] for c in ("x1", "x2", "y1", "y2"))
        if x1 >= x2 or y1 >= y2:
            raise AnnotationError(
                path,
                f"row {row}: empty box (need x1 < x2 and y1 < y2, got x1={x1}, x2={x2}, y1={y1}, y2={y2})",
            )
        if min(x2, y2) <= 0:
            raise AnnotationError(
                path,
                f"row {row}: box lies outside the slide (x2={x2}, y2={y2}: left of or above it)",
            )
    boxes = pd.DataFrame(
        {
            "slide_id": [slide_ids[n] for n in df["filename"]],
            "x1": values["x1"].astype(float),
            "y1": values["y1"].astype(float),
            "x2": values["x2"].astype(float),
            "y2": values["y2"].astype(float),
        }
    )
    if not {"max_x", "max_y"} & set(values.columns):
        return boxes
    sizes = [values[c] if c in values else pd.Series(UNKNOWN_SIDE, index=values.index) for c in ("max_x", "max_y")]  # fmt: skip
    clipped = clip_to_slide(
        boxes_as_annotations(boxes, path), *(v.to_numpy(float) for v in sizes), tolerance=tolerance
    )
    bounds = shapely.bounds(np.asarray(clipped.geometry, dtype=object)).reshape(-1, 4)
    return boxes.assign(x1=bounds[:, 0], y1=bounds[:, 1], x2=bounds[:, 2], y2=bounds[:, 3])


def slide_name_map(samples: pd.DataFrame) -> dict[str, str]:
    """Map both file names and slide ids of a sample sheet to slide ids."""
    names = {Path(p).name: s for s, p in zip(samples.slide_id, samples.path, strict=True)}
    names.update({s: s for s in samples.slide_id})
    return names


def boxes_as_annotations(
    boxes: pd.DataFrame, source: str | Path, default_class: str = "lesion"
) -> pd.DataFrame:
    """Boxes ``slide_id,x1,y1,x2,y2`` as rectangles in the internal annotation form."""
    geoms = shapely.box(*boxes[["x1", "y1", "x2", "y2"]].to_numpy(float).reshape(-1, 4).T)
    return pd.DataFrame(
        {
            "slide_id": boxes.slide_id.to_numpy(),
            "class_name": default_class,
            "geometry": list(np.atleast_1d(geoms)) if len(boxes) else [],
            "source": str(source),
            "item": [f"row {i + 2}" for i in boxes.index] if len(boxes) else [],
        },
        columns=ANNOTATION_COLUMNS,
    )


def write_box_index(
    sheet: pd.DataFrame, digilut_csv: str | Path, out: str | Path, tolerance: float = 0.05
) -> int:
    """Check the DigiLut CSV once and write its boxes as a table sorted by slide id.

    A slide's job then reads its own rows (:func:`read_box_index`) instead of parsing and
    checking the whole cohort's CSV: O(rows) once, not O(slides x rows). Each box keeps its
    CSV row number and the CSV's path, so errors still name ``row N`` of the CSV.

    Returns:
        The number of boxes.
    """
    boxes = read_digilut_csv(digilut_csv, slide_name_map(sheet), tolerance)
    table = boxes.assign(row=boxes.index, source=str(digilut_csv))
    table = table.astype({"slide_id": "string", "source": "string"})  # typed when empty too
    table = table.sort_values("slide_id", kind="stable", ignore_index=True)
    table.to_parquet(out, index=False, row_group_size=BOX_INDEX_ROW_GROUP)
    return len(table)


def read_box_index(path: str | Path, slides: Iterable[str]) -> tuple[pd.DataFrame, str]:
    """The boxes of ``slides`` from :func:`write_box_index`'s table, in CSV row order.

    Returns:
        Boxes ``slide_id,x1,y1,x2,y2`` indexed by their CSV row (as :func:`read_digilut_csv`
        gives them), and the CSV's path.
    """
    table = pd.read_parquet(path, filters=[("slide_id", "in", list(slides))])
    columns = ["slide_id", "x1", "y1", "x2", "y2"]
    if table.empty:
        source = pd.read_parquet(path, columns=["source"]).source
        return pd.DataFrame(columns=columns), (source.iloc[0] if len(source) else str(path))
    table = table.sort_values("row").set_index("row").rename_axis(None)
    return table[columns].astype({"slide_id": object}), str(table.source.iloc[0])


def _sheet_value(row: pd.Series, column: str) -> object | None:
    value = row.get(column)
    return (
        None
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == ""
        else value
    )


def slide_annotation_file(sheet: pd.DataFrame, slide_id: str) -> str | None:
    """The sample sheet's per-slide ``annotation`` path of ``slide_id`` (None if absent)."""
    if "annotation" not in sheet.columns:
        return None
    row = sheet.loc[sheet.slide_id == slide_id]
    return None if row.empty else _sheet_value(row.iloc[0], "annotation")  # type: ignore[return-value]


def read_cohort_annotations(
    sheet: pd.DataFrame,
    digilut_csv: str | Path | None,
    settings: ImportSettings | None = None,
    *,
    slides: Iterable[str] | None = None,
    mpps: Mapping[str, float] | None = None,
    box_index: str | Path | None = None,
    warn_mpp: bool = True,
) -> pd.DataFrame:
    """All annotations of ``slides`` (default: the whole sheet) in the internal form.

    Rows of the DigiLut CSV (if given; or of its ``box_index``, :func:`write_box_index`) and
    the per-slide files of the sheet's ``annotation`` column are combined. ``mpps`` gives
    each slide's level-0 um/px, needed to draw point annotations (the sheet's ``mpp`` column
    is used where ``mpps`` lacks a slide); ``warn_mpp=False`` where they are nominal.
    """
    settings = settings or ImportSettings()
    wanted = set(sheet.slide_id if slides is None else slides)
    parts = []
    if box_index is not None:
        boxes, source = read_box_index(box_index, wanted)
        parts.append(boxes_as_annotations(boxes, source, settings.default_class))
    elif digilut_csv is not None:
        boxes = read_digilut_csv(digilut_csv, slide_name_map(sheet), settings.edge_tolerance)
        boxes = boxes[boxes.slide_id.isin(wanted)]
        parts.append(boxes_as_annotations(boxes, digilut_csv, settings.default_class))
    if "annotation" in sheet.columns:
        for _, row in sheet[sheet.slide_id.isin(wanted)].iterrows():
            path = _sheet_value(row, "annotation")
            if path is None:
                continue
            mpp = (mpps or {}).get(row.slide_id, _sheet_value(row, "mpp"))
            scale = _sheet_value(row, "annotation_scale")
            local = (
                settings
                if scale is None
                else ImportSettings(
                    **{**settings.__dict__, "scale": float(scale)}  # type: ignore[arg-type]
                )
            )
            fmt = _sheet_value(row, "annotation_format")
            table = read_annotation_file(
                str(path),
                local,
                mpp=None if mpp is None else float(mpp),
                fmt=fmt,  # type: ignore[arg-type]
                warn_mpp=warn_mpp,
            )
            parts.append(table.assign(slide_id=row.slide_id, source=str(path)))
    if not parts:
        return pd.DataFrame(columns=ANNOTATION_COLUMNS)
    return pd.concat(parts, ignore_index=True)[ANNOTATION_COLUMNS]


def clip_to_slide(
    annotations: pd.DataFrame,
    width: float | np.ndarray,
    height: float | np.ndarray,
    *,
    centres: bool = False,
    tolerance: float = 0.05,
) -> pd.DataFrame:
    """The annotations with every outline that crosses the slide's edge clipped to it.

    Annotators draw up to and over the border; such outlines are clipped and counted, one
    warning line per file naming the first items. Refused (:class:`AnnotationError` naming file
    and item) is only what cannot be a drawing on this slide: an outline with nothing inside
    it, or one reaching further than ``tolerance`` of the slide's width or height past an edge
    (a wrong scale or level). With ``centres`` (point annotations) the middle of each outline
    must lie inside, and nothing is clipped (a centre near the edge has a disc past it).
    ``width`` and ``height`` are the slide's, or one per row (boxes of several slides).
    """
    if annotations.empty:
        return annotations
    geoms = np.asarray(annotations.geometry, dtype=object)
    w = np.broadcast_to(np.asarray(width, float), len(geoms))
    h = np.broadcast_to(np.asarray(height, float), len(geoms))
    b = shapely.bounds(geoms).reshape(-1, 4)
    if centres:
        mid = (b[:, :2] + b[:, 2:]) / 2
        out = (mid[:, 0] < 0) | (mid[:, 1] < 0) | (mid[:, 0] > w) | (mid[:, 1] > h)
        _refuse(annotations, b, np.where(out, "has its centre outside the slide", ""), w, h)
        return annotations
    past = np.maximum.reduce([-b[:, 0], -b[:, 1], b[:, 2] - w, b[:, 3] - h])
    crossing = past > 0
    clipped = shapely.intersection(geoms[crossing], shapely.box(0, 0, w[crossing], h[crossing]))
    outside = np.zeros(len(geoms), bool)
    outside[crossing] = shapely.area(clipped) <= 0
    far = ~outside & (past > tolerance * np.minimum(w, h))
    causes = np.where(outside, "lies outside the slide", "").astype(object)
    causes[far] = [
        f"reaches {p:g} px past the slide's edge, more than annotation_import.edge_tolerance "
        f"({tolerance:g} of the slide's shorter side)"
        for p in past[far]
    ]
    _refuse(annotations, b, causes, w, h)
    if not crossing.any():
        return annotations
    out = annotations.copy()
    out["geometry"] = pd.Series(list(geoms), index=out.index, dtype=object)
    out.loc[crossing, "geometry"] = pd.Series(
        [
            _polygonal(g, Path(a.source), a.item)
            for g, a in zip(clipped, annotations[crossing].itertuples(), strict=True)
        ],
        index=out.index[crossing],
        dtype=object,
    )
    size = f" ({w[0]:g} x {h[0]:g} px)" if np.ptp(w) == 0 and np.ptp(h) == 0 else ""
    for source, part in annotations[crossing].groupby("source", sort=False):
        log.warning(
            "%s: %d outlines crossed the slide edge%s and were clipped: %s",
            source, len(part), size, name_some(part["item"]),
        )  # fmt: skip
    return out


def _refuse(
    annotations: pd.DataFrame, bounds: np.ndarray, causes: np.ndarray, w: np.ndarray, h: np.ndarray
) -> None:
    """Raise for the first annotation with a cause, in file order, counting the others."""
    bad = np.flatnonzero(causes != "")
    if not len(bad):
        return
    a, (x1, y1, x2, y2) = annotations.iloc[bad[0]], bounds[bad[0]]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    raise AnnotationError(
        a["source"],
        f"{a['item']}: slide {a['slide_id']}: outline ({x1:g}, {y1:g}, {x2:g}, {y2:g}) "
        f"{causes[bad[0]]} ({w[bad[0]]:g} x {h[bad[0]]:g} px){more}; check the coordinate "
        "scale or level",
    )


def positive_slides(annotations: pd.DataFrame) -> set[str]:
    """Slides with at least one lesion annotation (excluded regions do not count)."""
    return set(annotations.slide_id[annotations.class_name != EXCLUDE])


def lesion_slides(
    sheet: pd.DataFrame, digilut_csv: str | Path | None, settings: ImportSettings | None = None
) -> set[str]:
    """Slides of ``sheet`` with a lesion, from all annotation sources, for stratifying.

    Point discs are drawn at a nominal 1 um/px: only their presence matters here.
    """
    nominal = dict.fromkeys(sheet.slide_id, 1.0)
    return positive_slides(
        read_cohort_annotations(sheet, digilut_csv, settings, mpps=nominal, warn_mpp=False)
    )


def truth_boxes(
    sheet: pd.DataFrame,
    annotations_path: str | Path | None,
    settings: ImportSettings | None = None,
    *,
    mpps: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Ground-truth boxes ``slide_id,x1,y1,x2,y2`` for evaluation: the bounding box of each
    lesion annotation (DigiLut boxes unchanged); excluded regions are left out.
    """
    ann = read_cohort_annotations(sheet, annotations_path, settings, mpps=mpps)
    ann = ann[ann.class_name != EXCLUDE]
    b = shapely.bounds(np.asarray(ann.geometry, dtype=object)).reshape(-1, 4)
    return pd.DataFrame(
        {
            "slide_id": ann.slide_id.to_numpy(),
            "x1": b[:, 0],
            "y1": b[:, 1],
            "x2": b[:, 2],
            "y2": b[:, 3],
        }
    )


def slide_mpps(tile_summaries: Iterable[str | Path]) -> dict[str, float]:
    """``slide_id -> mpp`` from tiling records ``results/tiles/{slide}.json``."""
    out = {}
    for path in tile_summaries:
        info = json.loads(Path(path).read_text())
        out[str(info["slide_id"])] = float(info["mpp"])
    return out
