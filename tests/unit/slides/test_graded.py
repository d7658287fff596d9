"""The graded demo cohort: slide labels that come out of the hidden lesions, boxes withheld."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from histodetect.config.validation import check_config, merge_config
from histodetect.slides.graded import (
    HARDER,
    HIDDEN,
    draw_outcomes,
    make_demo,
    plan_demo,
    planned_sheet,
)
from histodetect.slides.synthetic import plan_cohort, render_slide, slide_patients

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


def test_slides_per_patient_gives_each_patient_a_seeded_count_in_range() -> None:
    patient_of = slide_patients(72, 40, (1, 3), seed=4)
    counts = np.bincount(patient_of, minlength=40)
    assert len(patient_of) == 72 and counts.min() >= 1 and counts.max() <= 3
    assert set(counts) == {1, 2, 3} and patient_of == slide_patients(72, 40, (1, 3), seed=4)
    round_robin = plan_cohort(n_slides=8, n_patients=4, seed=3)
    assert plan_cohort(n_slides=8, n_patients=4, seed=3, slides_per_patient=None) == round_robin
    assert [s.patient_id for s in round_robin] == ["P01", "P02", "P03", "P04"] * 2
    with pytest.raises(ValueError, match="cannot give 40 patients 1-3 slides"):
        slide_patients(121, 40, (1, 3), seed=0)


def test_the_survival_config_validates_and_its_cohort_is_as_described() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    survival = yaml.safe_load((REPO / "config" / "mil_survival.yaml").read_text())
    merge_config(config, survival)
    check_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml", "mil_survival")
    assert config["mil"]["task"] == "survival" and config["mil"]["bag"] == "patient"
    sheet = planned_sheet({"enabled": True, **survival["demo"]})
    patients = sheet.groupby("patient_id").agg(
        time=("time", "first"), event=("event", "first"), n=("slide_id", "size"),
        lesions=("label", "mean"),
    )  # fmt: skip
    assert set(patients.n) == {1, 2, 3}  # 1-3 slides a patient
    assert 0.3 <= 1 - patients.event.mean() <= 0.45  # about 40% censored
    censored = patients[patients.event == 0]
    assert (censored.time == 30).any() and (censored.time < 30).any()  # at the end, at random
    many, few = patients.lesions >= 2, patients.lesions < 1
    assert patients.time[many].median() < patients.time[few].median()  # hazard grows
