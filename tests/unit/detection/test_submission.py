"""Submission tables: fixed row counts, zero padding, integer boxes inside the slide."""

from __future__ import annotations

import pandas as pd
import pytest

from histodetect.detection.submission import submission_table

BOXES = pd.DataFrame(
    {"slide_id": ["a", "a", "a", "b"], "x1": [10.4, -5.0, 100.0, 7.0], "y1": [20.6, 3.0, 50.0, 8.0],
     "x2": [30.2, 40.0, 1200.0, 9.0], "y2": [40.0, 60.0, 90.0, 10.0], "score": [0.5, 0.9, 0.7, 0.3]}
)  # fmt: skip
SLIDES = pd.DataFrame(
    {"slide_id": ["a", "b", "c"], "filename": ["a.svs", "b.svs", "c.svs"],
     "width": [1000, 500, 500], "height": [800, 500, 500], "n_lesions": [2, 3, None]}
)  # fmt: skip


def test_exact_rows_per_slide_padded_with_zeros() -> None:
    sub = submission_table(BOXES, SLIDES)
    assert list(sub.columns) == ["filename", "x1", "x2", "y1", "y2"]
    assert sub.groupby("filename").size().to_dict() == {"a.svs": 2, "b.svs": 3}
    a = sub[sub.filename == "a.svs"]
    assert a.iloc[0].tolist() == ["a.svs", 0, 40, 3, 60]  # best first, clipped at 0
    assert a.iloc[1].tolist() == ["a.svs", 100, 1000, 50, 90]  # clipped to the width
    b = sub[sub.filename == "b.svs"]
    assert (b.iloc[1:, 1:] == 0).all().all()  # padded rows are zero boxes


def test_rows_lie_inside_their_slide() -> None:
    sub = submission_table(BOXES, SLIDES.assign(n_lesions=None))
    assert len(sub) == 4
    sizes = SLIDES.set_index("filename")
    for row in sub.itertuples(index=False):
        w, h = sizes.loc[row.filename, ["width", "height"]]
        assert 0 <= row.x1 <= row.x2 <= w and 0 <= row.y1 <= row.y2 <= h


def test_digilut_template_order_and_header() -> None:
    sub = submission_table(
        BOXES, SLIDES, columns=["row", "filename", "y1", "y2", "x1", "x2"],
        header=["trustii_id", "filename", "y1", "y2", "x1", "x2"],
    )  # fmt: skip
    assert list(sub.columns) == ["trustii_id", "filename", "y1", "y2", "x1", "x2"]
    assert sub.trustii_id.tolist() == [1, 2, 3, 4, 5]
    assert sub.iloc[0, 2:].tolist() == [3, 60, 0, 40]  # y1, y2, x1, x2 of a's best box
    with pytest.raises(ValueError, match="unknown submission column"):
        submission_table(BOXES, SLIDES, columns=["xmin"])
