"""Seeded synthetic H&E-like cohort: pyramidal TIFF slides, a sample sheet and lesion boxes.

The demo cohort lets the workflow run end to end on a fresh machine. Each slide shows near-white
glass, one to three irregular pink tissue pieces with sparse small purple nuclei, and (except on
negative slides) one or more lesions: irregular blobs fully inside tissue, with a more purple
stroma crowded with large dark nuclei. The ground truth is the tight level-0 bounding box of each
lesion blob, written in the DigiLut layout (``filename,x1,x2,y1,y2,max_x,max_y``).

Shapes are drawn on a coarse grid and upsampled (:mod:`~histodetect.slides.synthetic_layout`),
the image is painted in row strips (:mod:`~histodetect.slides.synthetic_paint`) and written as a
pyramidal TIFF (:mod:`~histodetect.slides.pyramid_tiff`); this module plans and writes cohorts and
re-exports the names callers use. The same seed gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histodetect.io import atomic_path
from histodetect.slides.pyramid_tiff import write_pyramidal_tiff
from histodetect.slides.synthetic_layout import COARSE, SyntheticSlideSpec, tissue_truth
from histodetect.slides.synthetic_paint import SyntheticSlide, render_slide

__all__ = [
    "ANNOTATION_COLUMNS",
    "COARSE",
    "SAMPLE_COLUMNS",
    "SyntheticSlide",
    "SyntheticSlideSpec",
    "make_cohort",
    "plan_cohort",
    "render_slide",
    "tissue_truth",
    "write_pyramidal_tiff",
]

SAMPLE_COLUMNS = ["slide_id", "patient_id", "path", "mpp"]
ANNOTATION_COLUMNS = ["filename", "x1", "x2", "y1", "y2", "max_x", "max_y"]


def plan_cohort(
    *,
    n_slides: int = 12,
    n_patients: int = 6,
    width: int = 6144,
    height: int = 6144,
    mpp: float = 0.5,
    lesions_per_slide: tuple[int, int] = (1, 3),
    lesion_size_um: tuple[float, float] = (500, 1200),
    negative_slides: int = 1,
    seed: int = 0,
    lesion_contrast: tuple[float, float] = (1.0, 1.0),
    mimics_per_slide: int = 0,
    mimic_contrast: float = 0.0,
    slides_per_patient: tuple[int, int] | None = None,
) -> list[SyntheticSlideSpec]:
    """Decide slide-to-patient assignment, negative slides and per-slide seeds.

    ``lesion_contrast`` is the range a slide's lesion contrast is drawn from and
    ``mimics_per_slide`` the look-alike regions of every slide, ``mimic_contrast`` their
    shift towards lesion colour (see :class:`SyntheticSlideSpec`); their defaults make the
    classic, easy cohort.

    :func:`make_cohort` takes the same keywords, so a workflow can list the slides before
    they exist. Slides go to patients round-robin, or with ``slides_per_patient`` (an
    inclusive range) each patient gets a seeded number of slides in that range
    (:func:`slide_patients`). Negative slides are chosen at random such that at most
    one patient is left without a lesion slide.

    Raises:
        ValueError: On inconsistent arguments.
    """
    lo, hi = (int(v) for v in lesions_per_slide)
    if n_slides < 1 or n_patients < 1 or n_patients > n_slides:
        raise ValueError(f"need 1 <= n_patients <= n_slides, got {n_patients=} {n_slides=}")
    if not 0 <= negative_slides < n_slides:
        raise ValueError(f"need 0 <= negative_slides < n_slides, got {negative_slides=}")
    if not 1 <= lo <= hi:
        raise ValueError(f"need 1 <= min <= max in lesions_per_slide, got {lesions_per_slide}")
    if not 0 < lesion_size_um[0] <= lesion_size_um[1]:
        raise ValueError(f"bad lesion_size_um {lesion_size_um}")
    if min(width, height) < 16 * COARSE or mpp <= 0:
        raise ValueError(f"slide too small or bad mpp: {width}x{height} at {mpp} um/px")
    if not 0 <= lesion_contrast[0] <= lesion_contrast[1] <= 1:
        raise ValueError(f"need 0 <= min <= max <= 1 in lesion_contrast, got {lesion_contrast}")
    if mimics_per_slide < 0:
        raise ValueError(f"need mimics_per_slide >= 0, got {mimics_per_slide}")
    if not 0 <= mimic_contrast <= 1:
        raise ValueError(f"need 0 <= mimic_contrast <= 1, got {mimic_contrast}")

    rng = np.random.default_rng(seed)
    if slides_per_patient is None:
        patient_of = [i % n_patients for i in range(n_slides)]
    else:
        patient_of = slide_patients(n_slides, n_patients, slides_per_patient, seed)
    left = np.bincount(patient_of, minlength=n_patients)  # lesion slides left per patient
    negatives: set[int] = set()
    for i in rng.permutation(n_slides):
        if len(negatives) == negative_slides:
            break
        p = patient_of[int(i)]
        emptied = int(np.sum(left == 0))
        if left[p] == 1 and emptied >= 1:
            continue  # would leave a second patient without lesions
        left[p] -= 1
        negatives.add(int(i))
    if len(negatives) < negative_slides:
        raise ValueError(
            f"cannot make {negative_slides} negative slides among {n_slides} slides of "
            f"{n_patients} patients with at most one patient lacking a lesion slide"
        )
    n_lesions = rng.integers(lo, hi + 1, size=n_slides)
    seeds = np.random.SeedSequence(seed).generate_state(n_slides, dtype=np.uint64)
    contrast = rng.uniform(float(lesion_contrast[0]), float(lesion_contrast[1]), size=n_slides)
    digits = max(3, len(str(n_slides)))
    pdigits = max(2, len(str(n_patients)))
    return [
        SyntheticSlideSpec(
            slide_id=f"S{i + 1:0{digits}d}",
            patient_id=f"P{patient_of[i] + 1:0{pdigits}d}",
            width=int(width),
            height=int(height),
            mpp=float(mpp),
            n_lesions=0 if i in negatives else int(n_lesions[i]),
            lesion_size_um=(float(lesion_size_um[0]), float(lesion_size_um[1])),
            seed=int(seeds[i]),
            lesion_contrast=float(contrast[i]),
            n_mimics=int(mimics_per_slide),
            mimic_contrast=float(mimic_contrast),
        )
        for i in range(n_slides)
    ]


def slide_patients(
    n_slides: int, n_patients: int, slides_per_patient: tuple[int, int], seed: int
) -> list[int]:
    """Each slide's patient (0-based) when every patient has ``lo`` to ``hi`` slides
    (``slides_per_patient``): each patient gets ``lo``, the slides left go one by one to a
    random patient with fewer than ``hi``, and the slides are shuffled, all from a generator
    of its own (the rest of the plan draws as with round-robin).

    Raises:
        ValueError: When ``n_slides`` cannot be split so.
    """
    lo, hi = (int(v) for v in slides_per_patient)
    if not 1 <= lo <= hi or not lo * n_patients <= n_slides <= hi * n_patients:
        raise ValueError(
            f"cannot give {n_patients} patients {lo}-{hi} slides each from {n_slides} slides"
        )
    rng = np.random.default_rng([seed, 1])
    counts = np.full(n_patients, lo)
    for _ in range(n_slides - lo * n_patients):
        counts[rng.choice(np.flatnonzero(counts < hi))] += 1
    return [int(p) for p in rng.permutation(np.repeat(np.arange(n_patients), counts))]


def make_cohort(
    out_dir: Path, *, tile: int = 256, jpeg_quality: int = 85, **plan: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write a synthetic cohort: ``slides/<slide_id>.tiff``, ``samples.tsv``, ``annotations.csv``.

    Args:
        out_dir: Output folder (created if missing).
        tile: TIFF tile side in pixels.
        jpeg_quality: JPEG quality of the tiles.
        **plan: keywords of :func:`plan_cohort` (slide count and size, patients, mpp, lesions,
            seed); the same seed gives byte-identical files.

    Returns:
        ``(samples, annotations)``: the sample sheet (``slide_id, patient_id, path, mpp``) and
        the boxes (``filename, x1, x2, y1, y2, max_x, max_y``), as written.
    """
    out_dir = Path(out_dir)
    specs = plan_cohort(**plan)
    seed = plan.get("seed", 0)
    samples, boxes = [], []
    for spec in specs:
        slide = render_slide(spec)
        path = out_dir / "slides" / f"{spec.slide_id}.tiff"
        description = (
            f"histodetect synthetic H&E slide {spec.slide_id} (patient {spec.patient_id}); "
            f"{spec.width}x{spec.height} px at {spec.mpp} um/px; "
            f"{len(slide.boxes)} lesion(s); seed {seed}"
        )
        write_pyramidal_tiff(
            path, slide.rgb, spec.mpp, tile=tile, quality=jpeg_quality, description=description
        )
        samples.append((spec.slide_id, spec.patient_id, str(path), spec.mpp))
        for x1, y1, x2, y2 in slide.boxes.tolist():
            boxes.append((path.name, x1, x2, y1, y2, spec.width, spec.height))
        del slide
    samples_df = pd.DataFrame(samples, columns=SAMPLE_COLUMNS)
    ann_df = pd.DataFrame(boxes, columns=ANNOTATION_COLUMNS)
    for col in ANNOTATION_COLUMNS[1:]:
        ann_df[col] = ann_df[col].astype(np.int64)
    with atomic_path(out_dir / "annotations.csv") as tmp:
        ann_df.to_csv(tmp, index=False)
    with atomic_path(out_dir / "samples.tsv") as tmp:
        samples_df.to_csv(tmp, sep="\t", index=False)
    return samples_df, ann_df
