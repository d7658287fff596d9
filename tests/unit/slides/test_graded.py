"""The graded demo cohort: slide labels that come out of the hidden lesions, boxes withheld."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from histodetect.slides.graded import (
    HARDER,
    HIDDEN,
    draw_outcomes,
    make_demo,
    plan_demo,
    planned_sheet,
)
from histodetect.slides.synthetic import render_slide

REPO = Path(__file__).resolve().parents[3]

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
    planned = planned_sheet(DEMO)  # the sheet the workflow checks before any job
    assert planned[["time", "event"]].equals(sheet[["time", "event"]])
    assert pd.read_csv(tmp_path / "annotations.csv").empty  # boxes withheld
    assert all((tmp_path / "slides" / f"{s}.tiff").stat().st_size > 0 for s in sheet.slide_id)


def test_the_harder_config_is_the_demo_with_graded_harder() -> None:
    demo = yaml.safe_load((REPO / "config" / "mil_demo.yaml").read_text())
    harder = yaml.safe_load((REPO / "config" / "mil_harder.yaml").read_text())
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in HARDER.items()}
    assert harder["demo"] == {**demo["demo"], **plain}
    assert {k: v for k, v in harder.items() if k != "demo"} == {
        k: v for k, v in demo.items() if k != "demo"
    }


def test_harder_slides_keep_the_rule_with_small_faint_lesions_and_look_alikes() -> None:
    demo = {**DEMO, **HARDER, "grades": 3, "n_slides": 3, "n_patients": 3}
    for spec in plan_demo(demo):
        slide = render_slide(spec)
        assert len(slide.boxes) == spec.n_lesions  # the grade is still the lesion count
        assert spec.n_mimics == 3 and 0.4 <= spec.lesion_contrast <= 0.7
        side_um = (slide.boxes[:, 2:] - slide.boxes[:, :2]) * spec.mpp
        assert np.all(side_um <= 160 + 32)  # small against the 2 mm slide (edge smoothing)
        # the look-alikes are the only change from the same slide without them, away from lesions
        bare = render_slide(dataclasses.replace(spec, n_mimics=0))
        changed = np.abs(slide.rgb.astype(int) - bare.rgb).max(2) > 0
        assert changed.mean() > 0.001
        for x1, y1, x2, y2 in slide.boxes.tolist():
            assert not changed[y1:y2, x1:x2].any()


def test_outcomes_are_one_per_patient_earlier_with_more_lesions_and_about_40_percent_censored() -> (
    None
):
    rng = np.random.default_rng(0)
    lesions = rng.integers(0, 4, 2000)
    patients = [f"P{i // 2}" for i in range(2000)]  # two slides each
    out = draw_outcomes(patients, lesions, seed=1)
    assert (out.groupby(np.array(patients)).nunique() == 1).all().all()  # one per patient
    assert out.time.ge(0).all() and out.time.le(30).all() and set(out.event) == {0, 1}
    assert 0.25 < 1 - out.event.mean() < 0.45
    mean = pd.Series(lesions).groupby(np.array(patients)).transform("mean")
    assert out.time[mean >= 2.5].median() < out.time[mean <= 0.5].median()
