"""Lesion boxes in the DigiLut CSV layout, checked row by row."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from histodetect.errors import AnnotationError

DIGILUT_COLUMNS = ["filename", "x1", "x2", "y1", "y2"]


def read_digilut_csv(path: str | Path, slide_ids: Mapping[str, str]) -> pd.DataFrame:
    """Read level-0 boxes ``filename,x1,x2,y1,y2[,max_x,max_y]`` into ``slide_id,x1,y1,x2,y2``.

    Args:
        path: the CSV file.
        slide_ids: maps a ``filename`` value (the slide file's name, or its slide id) to a slide id.

    Raises:
        AnnotationError: naming the file and row, for a missing column, an unknown slide,
            a non-numeric or NaN coordinate, an empty box (x1 >= x2 or y1 >= y2), or a box
            outside ``max_x``/``max_y`` when those columns are given.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"filename": str})
    except pd.errors.EmptyDataError:
        raise AnnotationError(
            path, "file is empty (expected a header filename,x1,x2,y1,y2)"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise AnnotationError(path, f"not a readable CSV ({err})") from None
    missing = [c for c in DIGILUT_COLUMNS if c not in df.columns]
    if missing:
        raise AnnotationError(
            path, f"missing column(s) {', '.join(missing)}; have {', '.join(map(str, df.columns))}"
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
        if min(x1, y1) < 0:
            raise AnnotationError(path, f"row {row}: negative coordinate")
        for hi, lim in (("x2", "max_x"), ("y2", "max_y")):  # each bound column is optional
            if lim in values and values.at[i, hi] > values.at[i, lim]:
                raise AnnotationError(
                    path,
                    f"row {row}: box outside the slide ({hi}={values.at[i, hi]} > {lim}={values.at[i, lim]})",
                )
    return pd.DataFrame(
        {
            "slide_id": [slide_ids[n] for n in df["filename"]],
            "x1": values["x1"].astype(float),
            "y1": values["y1"].astype(float),
            "x2": values["x2"].astype(float),
            "y2": values["y2"].astype(float),
        }
    )


def check_boxes_inside(boxes: pd.DataFrame, width: int, height: int, source: str | Path) -> None:
    """Raise :class:`AnnotationError` if a box of one slide leaves its ``width x height``."""
    out = boxes[(boxes.x2 > width) | (boxes.y2 > height) | (boxes.x1 < 0) | (boxes.y1 < 0)]
    if len(out):
        b = out.iloc[0]
        raise AnnotationError(
            source,
            f"slide {b.slide_id}: box ({b.x1:g}, {b.y1:g}, {b.x2:g}, {b.y2:g}) lies outside the slide ({width} x {height} px)",
        )


def slide_name_map(samples: pd.DataFrame) -> dict[str, str]:
    """Map both file names and slide ids of a sample sheet to slide ids."""
    names = {Path(p).name: s for s, p in zip(samples.slide_id, samples.path, strict=True)}
    names.update({s: s for s in samples.slide_id})
    return names
