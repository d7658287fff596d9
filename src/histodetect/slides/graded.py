"""A synthetic cohort with slide labels only: each slide's grade is set by hidden lesions.

The rule (what the demo of the target ``mil`` learns): a slide's grade is the number of
lesions painted on it, ``0`` to ``grades - 1``; grade 0 is a slide without a lesion. The
grades go round-robin over the slides in a seeded shuffle, so every grade has
``n_slides / grades`` slides (within one). The sample sheet gets the grade as its ``label``
column; the lesion boxes are withheld from the workflow (``annotations.csv`` has no rows) and
written beside it as ``hidden_lesions.csv`` only to check the rule.

:data:`HARDER` is the harder variant (``config/mil_harder.yaml``, used by ``bench/mil.py``): the
same rule with small lesions against the slide, fainter lesion colour and look-alike regions on
every slide (dense benign nuclei, tinted part of the way towards lesion colour), so that a
slide's grade hangs on a few percent of its tiles and colour alone does not find them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histodetect.io import atomic_path
from histodetect.slides.synthetic import (
    ANNOTATION_COLUMNS,
    SyntheticSlideSpec,
    make_cohort,
    plan_cohort,
    render_slide,
    write_pyramidal_tiff,
)

HIDDEN = "hidden_lesions.csv"

HARDER: dict[str, Any] = {
    "lesion_size_um": (100.0, 160.0),
    "lesion_contrast": (0.4, 0.7),
    "mimics_per_slide": 3,
    "mimic_contrast": 0.3,
}
"""Keywords of the planners (``demo`` config keys) that make the harder graded cohort: lesions
100-160 um across (about 2x2 tiles of 64 um on a 2 mm slide, against 250-400 um in the demo),
lesion contrast 0.4-0.7 instead of 1, and three look-alikes per slide at contrast 0.3."""


def plan_graded(*, grades: int = 4, **plan: Any) -> list[SyntheticSlideSpec]:
    """The slides of :func:`~histodetect.slides.synthetic.plan_cohort` (same keywords), each
    with ``n_lesions`` equal to its grade."""
    if grades < 2:
        raise ValueError(f"need grades >= 2, got {grades}")
    plan = {**plan, "negative_slides": 0}
    specs = plan_cohort(**plan)
    rng = np.random.default_rng(plan.get("seed", 0))
    order = rng.permutation(len(specs))
    grade = np.empty(len(specs), np.int64)
    grade[order] = np.arange(len(specs)) % grades
    return [dataclasses.replace(s, n_lesions=int(g)) for s, g in zip(specs, grade, strict=True)]


def make_graded_cohort(
    out_dir: Path, *, tile: int = 256, jpeg_quality: int = 85, **plan: Any
) -> pd.DataFrame:
    """Write ``slides/<slide_id>.tiff``, ``samples.tsv`` (with ``label``, the grade, and
    each patient's ``time`` and ``event``: :func:`draw_outcomes`), an
    ``annotations.csv`` without rows and ``hidden_lesions.csv`` (the boxes, for checks only).

    A lesion that does not fit is dropped by the renderer: the label is the number of boxes
    actually painted, so it always follows the rule. Returns the sample sheet.
    """
    out_dir = Path(out_dir)
    rows, boxes = [], []
    for spec in plan_graded(**plan):
        slide = render_slide(spec)
        path = out_dir / "slides" / f"{spec.slide_id}.tiff"
        write_pyramidal_tiff(
            path, slide.rgb, spec.mpp, tile=tile, quality=jpeg_quality,
            description=f"histodetect graded synthetic slide {spec.slide_id}",
        )  # fmt: skip
        rows.append((spec.slide_id, spec.patient_id, str(path), spec.mpp, len(slide.boxes)))
        for x1, y1, x2, y2 in slide.boxes.tolist():
            boxes.append((path.name, x1, x2, y1, y2, spec.width, spec.height))
        del slide
    samples = pd.DataFrame(rows, columns=["slide_id", "patient_id", "path", "mpp", "label"])
    specs = plan_graded(**plan)
    samples[["time", "event"]] = draw_outcomes(
        [s.patient_id for s in specs], [s.n_lesions for s in specs], plan.get("seed", 0)
    )
    with atomic_path(out_dir / "annotations.csv") as tmp:
        pd.DataFrame(columns=ANNOTATION_COLUMNS).to_csv(tmp, index=False)
    with atomic_path(out_dir / HIDDEN) as tmp:
        pd.DataFrame(boxes, columns=ANNOTATION_COLUMNS).to_csv(tmp, index=False)
    with atomic_path(out_dir / "samples.tsv") as tmp:
        samples.to_csv(tmp, sep="\t", index=False)
    return samples


def draw_outcomes(patients: Sequence[str], lesions: Sequence[float], seed: int) -> pd.DataFrame:
    """Each row's patient's time to event in months and whether it was seen (``time``,
    ``event``; the same on every slide of the patient): exponential with the hazard
    ``0.03 exp(0.9 g)`` per month, ``g`` the patient's mean number of planned lesions per
    slide, censored at random (exponential, mean 20 months) and at 30 months (the study's
    end), about 40% censored in all (fewer with many high grades)."""
    rng = np.random.default_rng([seed, 36])
    grade = pd.Series(np.asarray(lesions, float)).groupby(list(patients), sort=True).mean()
    event_time = rng.exponential(1 / (0.03 * np.exp(0.9 * grade.to_numpy(float))))
    censor = np.minimum(rng.exponential(20.0, len(grade)), 30.0)
    out = pd.DataFrame({"time": np.round(np.minimum(event_time, censor), 2),
                        "event": (event_time <= censor).astype(int)}, index=grade.index)  # fmt: skip
    return out.loc[list(patients)].reset_index(drop=True)


def _plan_args(demo: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """The ``demo`` config section as (graded?, keywords of the planners)."""
    plan = {k: v for k, v in demo.items() if k not in ("enabled", "graded", "grades")}
    for key in ("lesions_per_slide", "lesion_size_um", "lesion_contrast", "slides_per_patient"):
        if plan.get(key) is not None:
            plan[key] = tuple(plan[key])  # YAML gives lists
    graded = bool(demo.get("graded"))
    if graded:
        plan["grades"] = demo.get("grades", 4)
    return graded, plan


def plan_demo(demo: dict[str, Any]) -> list[SyntheticSlideSpec]:
    """The slides the ``demo`` config section makes (graded or with boxes), before they exist."""
    graded, plan = _plan_args(demo)
    return plan_graded(**plan) if graded else plan_cohort(**plan)


def planned_sheet(demo: dict[str, Any]) -> pd.DataFrame:
    """The sample sheet the ``demo`` section makes, known before any slide is drawn: ids,
    paths and (graded) the planned grade as ``label`` with each patient's ``time`` and
    ``event`` (:func:`draw_outcomes`, as :func:`make_graded_cohort` writes them)."""
    graded, plan = _plan_args(demo)
    specs = plan_demo(demo)
    sheet = pd.DataFrame(
        [(s.slide_id, s.patient_id, f"results/demo/slides/{s.slide_id}.tiff",
          s.n_lesions if graded else None) for s in specs],
        columns=["slide_id", "patient_id", "path", "label"],
    )  # fmt: skip
    if graded:
        sheet[["time", "event"]] = draw_outcomes(
            [s.patient_id for s in specs], [s.n_lesions for s in specs], plan.get("seed", 0)
        )
    return sheet


def make_demo(out_dir: Path, demo: dict[str, Any]) -> None:
    """Write the cohort of the ``demo`` config section (see :func:`plan_demo`)."""
    graded, plan = _plan_args(demo)
    if graded:
        make_graded_cohort(out_dir, **plan)
    else:
        make_cohort(out_dir, **plan)
