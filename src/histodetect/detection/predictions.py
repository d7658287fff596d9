"""The answers for a sheet of new slides: one line per slide and a challenge submission."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from histodetect.detection.slide_score import SLIDE_COLUMNS, SlideScore
from histodetect.detection.submission import submission_table
from histodetect.io import atomic_path


def write_predictions(
    *,
    sheet: pd.DataFrame,
    summary_paths: Sequence[str | Path],
    box_paths: Sequence[str | Path],
    score_paths: Sequence[str | Path],
    slide_score: SlideScore,
    submission: dict[str, Any],
    out_slides: str | Path,
    out_submission: str | Path,
) -> pd.DataFrame:
    """Write ``slides.tsv`` (every slide of the sheet) and the submission CSV.

    Slides whose tiling failed or found no tissue are listed with their status and error and
    get no boxes (with ``n_lesions`` given, zero boxes fill their rows). ``submission`` holds
    ``columns`` and ``header`` (see :func:`submission_table`).
    """
    infos = {Path(p).stem: json.loads(Path(p).read_text()) for p in summary_paths}
    boxes = {Path(p).stem: pd.read_csv(p, dtype={"slide_id": str}) for p in box_paths}
    probs = {Path(p).stem: pd.read_parquet(p)["prob"].to_numpy() for p in score_paths}
    rows, sizes = [], []
    for rec in sheet.itertuples(index=False):
        slide = str(rec.slide_id)
        info = infos.get(slide, {})
        done = slide in boxes
        score = slide_score.score(probs[slide]) if done else float("nan")
        status = "ok" if done else str(info.get("status") or "no tissue")
        rows.append(
            {"slide_id": slide, "slide_score": score,
             "lesion": ("yes" if slide_score.positive(score) else "no") if done else "",
             "n_boxes": len(boxes[slide]) if done else 0, "status": status,
             "error": info.get("error", "") if not done else ""}
        )  # fmt: skip
        sizes.append(
            {"slide_id": slide, "filename": Path(str(rec.path)).name,
             "width": info.get("width", 0), "height": info.get("height", 0),
             "n_lesions": getattr(rec, "n_lesions", None)}
        )  # fmt: skip
    table = pd.DataFrame(rows, columns=[*SLIDE_COLUMNS, "status", "error"])
    found = [b for b in boxes.values() if len(b)]
    all_boxes = (
        pd.concat(found, ignore_index=True)
        if found
        else pd.DataFrame(columns=["slide_id", "x1", "y1", "x2", "y2", "score"])
    )
    sub = submission_table(
        all_boxes,
        pd.DataFrame(sizes),
        columns=submission.get("columns") or ["filename", "x1", "x2", "y1", "y2"],
        header=submission.get("header"),
    )
    with atomic_path(out_slides) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    with atomic_path(out_submission) as tmp:
        sub.to_csv(tmp, index=False)
    return table
