"""Challenge submissions: a fixed number of integer boxes per slide, columns in a stated order.

DigiLut asked for exactly ``n`` rows per slide (padded with ``0,0,0,0`` boxes when fewer are
found); its template header was ``trustii_id,filename,y1,y2,x1,x2`` and teams lost points by
writing the columns in another order. Here the order is explicit: ``columns`` names the
values written (``row``: a 1-based row number, ``filename``, ``slide_id``, ``x1, y1, x2, y2``
in level-0 pixels, ``score``) and ``header`` what the first line calls them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

VALUES = ("row", "filename", "slide_id", "x1", "y1", "x2", "y2", "score")
DIGILUT_COLUMNS = ("filename", "x1", "x2", "y1", "y2")


def submission_table(
    boxes: pd.DataFrame,
    slides: pd.DataFrame,
    *,
    columns: Sequence[str] = DIGILUT_COLUMNS,
    header: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One table of every slide's boxes, best first, as integers inside the slide.

    Args:
        boxes: ``slide_id, x1, y1, x2, y2, score`` in level-0 pixels (any slides' boxes).
        slides: one row per slide: ``slide_id, filename, width, height`` and optionally
            ``n_lesions``; where that is filled the slide gets exactly that many rows (its
            best boxes, then zero boxes), otherwise one row per box.
        columns: the values of each row, in order (see :data:`VALUES`).
        header: names of those columns in the file (default: ``columns``).
    """
    unknown = [c for c in columns if c not in VALUES]
    if unknown:
        raise ValueError(f"unknown submission column(s) {unknown}; allowed: {', '.join(VALUES)}")
    header = list(header) if header is not None else list(columns)
    if len(header) != len(columns):
        raise ValueError(f"header has {len(header)} names for {len(columns)} columns")
    parts = []
    for slide in slides.itertuples(index=False):
        own = boxes[boxes["slide_id"].astype(str) == str(slide.slide_id)]
        own = own.sort_values("score", ascending=False, kind="stable")
        xy = _inside(own[["x1", "y1", "x2", "y2"]].to_numpy(np.float64), slide.width, slide.height)
        score = own["score"].to_numpy(np.float64)
        n = getattr(slide, "n_lesions", None)
        if n is not None and not pd.isna(n):
            n = int(float(n))
            xy, score = xy[:n], score[:n]
            pad = n - len(xy)
            xy = np.vstack([xy, np.zeros((pad, 4), np.int64)])
            score = np.r_[score, np.zeros(pad)]
        part = pd.DataFrame(xy, columns=["x1", "y1", "x2", "y2"])
        part.insert(0, "slide_id", str(slide.slide_id))
        part.insert(1, "filename", str(slide.filename))
        part["score"] = score
        parts.append(part)
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in ("slide_id", "filename")})
    table = pd.concat(parts, ignore_index=True) if parts else empty
    for col in ("x1", "y1", "x2", "y2"):
        table[col] = table[col].astype(np.int64) if len(table) else pd.Series(dtype=np.int64)
    if "score" not in table:
        table["score"] = pd.Series(dtype=np.float64)
    table["row"] = np.arange(1, len(table) + 1, dtype=np.int64)
    out = table[list(columns)].copy()
    out.columns = header
    return out


def _inside(xy: np.ndarray, width: float, height: float) -> np.ndarray:
    """Boxes rounded outwards to integers and clipped to ``[0, width] x [0, height]``."""
    if not len(xy):
        return np.zeros((0, 4), np.int64)
    x1, y1 = np.floor(xy[:, 0]), np.floor(xy[:, 1])
    x2, y2 = np.ceil(xy[:, 2]), np.ceil(xy[:, 3])
    w, h = int(width), int(height)
    out = np.stack([np.clip(x1, 0, w), np.clip(y1, 0, h), np.clip(x2, 0, w), np.clip(y2, 0, h)], 1)
    return out.astype(np.int64)
