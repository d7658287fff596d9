"""The graded demo cohort: slide labels that come out of the hidden lesions, boxes withheld."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from histodetect.slides.graded import HIDDEN, make_demo, plan_demo

DEMO = {
    "enabled": True, "graded": True, "grades": 3, "n_slides": 6, "n_patients": 6,
    "width": 2048, "height": 2048, "mpp": 1.0, "lesion_size_um": [250, 400], "seed": 3,
}  # fmt: skip


def test_each_slide_s_grade_is_its_number_of_hidden_lesions(tmp_path: Path) -> None:
    make_demo(tmp_path, DEMO)
    sheet = pd.read_csv(tmp_path / "samples.tsv", sep="\t")
    hidden = pd.read_csv(tmp_path / HIDDEN)
    count = hidden.filename.str.removesuffix(".tiff").value_counts()
    assert list(sheet.label) == [int(count.get(s, 0)) for s in sheet.slide_id]
    assert sorted(sheet.label) == [0, 0, 1, 1, 2, 2]  # every grade, equally often
    assert list(sheet.label) == [s.n_lesions for s in plan_demo(DEMO)]  # known before
    assert pd.read_csv(tmp_path / "annotations.csv").empty  # boxes withheld
    assert all((tmp_path / "slides" / f"{s}.tiff").stat().st_size > 0 for s in sheet.slide_id)
