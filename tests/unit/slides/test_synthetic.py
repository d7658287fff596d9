"""Tests of the synthetic demo cohort (small slides, so the whole file runs in seconds)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest

from histodetect.slides.synthetic import (
    ANNOTATION_COLUMNS,
    COARSE,
    SAMPLE_COLUMNS,
    make_cohort,
    plan_cohort,
    render_slide,
    write_pyramidal_tiff,
)

KW = dict(
    n_slides=4,
    n_patients=2,
    width=2048,
    height=2048,
    mpp=0.5,
    lesions_per_slide=(1, 2),
    lesion_size_um=(150.0, 300.0),
    negative_slides=1,
    seed=3,
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("cohort")
    samples, ann = make_cohort(out, **KW)
    return out, samples, ann


@pytest.fixture(scope="module")
def rendered() -> dict[str, object]:
    """Ground truth of every slide, re-rendered from the same plan."""
    return {spec.slide_id: render_slide(spec) for spec in plan_cohort(**KW)}


def _thumb(slide: openslide.OpenSlide, downsample: int) -> np.ndarray:
    """RGB thumbnail at exactly ``downsample`` (block mean below the nearest level)."""
    level = slide.get_best_level_for_downsample(downsample)
    rgb = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB"))
    f = round(downsample / slide.level_downsamples[level])
    h, w = rgb.shape[0] // f, rgb.shape[1] // f
    return rgb[: h * f, : w * f].reshape(h, f, w, f, 3).mean((1, 3)).astype(np.uint8)


def test_files_and_tables(cohort: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    out, samples, ann = cohort
    on_disk = pd.read_csv(out / "samples.tsv", sep="\t")
    assert list(on_disk.columns) == SAMPLE_COLUMNS
    pd.testing.assert_frame_equal(on_disk, samples)
    ann_disk = pd.read_csv(out / "annotations.csv")
    assert list(ann_disk.columns) == ANNOTATION_COLUMNS
    pd.testing.assert_frame_equal(ann_disk, ann)
    for col in ANNOTATION_COLUMNS[1:]:
        assert pd.api.types.is_integer_dtype(ann_disk[col])
    assert len(samples) == KW["n_slides"]
    assert all(Path(p).is_file() for p in samples["path"])
    assert set(ann["filename"]) <= {Path(p).name for p in samples["path"]}
    assert (ann["max_x"] == KW["width"]).all() and (ann["max_y"] == KW["height"]).all()
    assert (ann["x1"] >= 0).all() and (ann["y1"] >= 0).all()
    assert (ann["x2"] <= ann["max_x"]).all() and (ann["y2"] <= ann["max_y"]).all()
    assert (ann["x1"] < ann["x2"]).all() and (ann["y1"] < ann["y2"]).all()


def test_patients_and_negatives(cohort: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    _, samples, ann = cohort
    assert samples["patient_id"].nunique() == KW["n_patients"]
    names = samples["path"].map(lambda p: Path(p).name)
    positive = names.isin(set(ann["filename"]))
    assert (~positive).sum() == KW["negative_slides"]
    per_patient = positive.groupby(samples["patient_id"]).any()
    assert (~per_patient).sum() <= 1


def test_plan_rejects_impossible_negatives() -> None:
    plans = plan_cohort(n_slides=6, n_patients=3, negative_slides=4, seed=1)
    has_lesion = {}
    for spec in plans:
        has_lesion[spec.patient_id] = has_lesion.get(spec.patient_id, False) or spec.n_lesions > 0
    assert sum(1 for v in has_lesion.values() if not v) <= 1
    assert sum(spec.n_lesions == 0 for spec in plans) == 4
    with pytest.raises(ValueError):
        plan_cohort(n_slides=6, n_patients=3, negative_slides=5)


def test_openslide_pyramid_and_mpp(cohort: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    _, samples, _ = cohort
    for path in samples["path"]:
        with openslide.OpenSlide(path) as slide:
            assert slide.dimensions == (KW["width"], KW["height"])
            assert slide.level_count > 1
            np.testing.assert_allclose(
                slide.level_downsamples, [2.0**k for k in range(slide.level_count)], rtol=1e-3
            )
            assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(KW["mpp"])
            assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(KW["mpp"])
            assert "synthetic" in slide.properties["tiff.ImageDescription"]


def test_boxes_inside_tissue_and_apart(
    cohort: tuple[Path, pd.DataFrame, pd.DataFrame], rendered: dict[str, object]
) -> None:
    _, _, ann = cohort
    gap_px = 200 / KW["mpp"]
    for slide_id, truth in rendered.items():
        rows = ann[ann["filename"] == f"{slide_id}.tiff"]
        boxes = rows[["x1", "y1", "x2", "y2"]].to_numpy()
        np.testing.assert_array_equal(boxes, truth.boxes)
        assert not (truth.lesion & ~truth.tissue).any()
        for x1, y1, x2, y2 in boxes:
            inner = (slice(y1 // COARSE + 1, y2 // COARSE), slice(x1 // COARSE + 1, x2 // COARSE))
            assert truth.tissue[inner].all()
            fill = truth.lesion[inner].mean()
            assert 0.6 <= fill <= 0.99
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                dx = max(b[0] - a[2], a[0] - b[2])
                dy = max(b[1] - a[3], a[1] - b[3])
                assert max(dx, dy) >= gap_px


def test_lesions_darker_and_more_purple(cohort: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    _, samples, ann = cohort
    plans = {s.slide_id: s for s in plan_cohort(**KW)}
    for slide_id, path in zip(samples["slide_id"], samples["path"], strict=True):
        rows = ann[ann["filename"] == Path(path).name]
        if rows.empty:
            continue
        truth = render_slide(plans[slide_id])
        with openslide.OpenSlide(path) as slide:
            rgb = _thumb(slide, 2).astype(np.float64)
        tissue = np.repeat(np.repeat(truth.tissue, COARSE // 2, 0), COARSE // 2, 1)
        inside = np.zeros(tissue.shape, bool)
        for x1, y1, x2, y2 in rows[["x1", "y1", "x2", "y2"]].to_numpy() // 2:
            inside[max(0, y1 - 50) : y2 + 50, max(0, x1 - 50) : x2 + 50] = True
        normal = rgb[tissue & ~inside].mean(0)
        for x1, y1, x2, y2 in rows[["x1", "y1", "x2", "y2"]].to_numpy() // 2:
            lesion = rgb[y1:y2, x1:x2].reshape(-1, 3).mean(0)
            assert lesion.mean() < normal.mean() - 15  # darker
            assert lesion[0] - lesion[2] < normal[0] - normal[2] - 10  # less red vs blue


def test_pyfast_finds_the_tissue(
    cohort: tuple[Path, pd.DataFrame, pd.DataFrame], rendered: dict[str, object]
) -> None:
    import fast  # pyFAST is a dependency: a missing install must fail here, not skip

    _, samples, _ = cohort
    for slide_id, path in zip(samples["slide_id"], samples["path"], strict=True):
        with openslide.OpenSlide(path) as slide:
            thumb = _thumb(slide, COARSE)  # 8 um/px at 0.5 um/px
        img = fast.Image.createFromArray(np.ascontiguousarray(thumb))
        seg = fast.TissueSegmentation.create(
            useColorThresholdingMethod=True, threshold=85, dilationSize=3, erosionSize=3
        )
        seg.setInputData(img)
        mask = np.asarray(seg.runAndGetOutputData())[..., 0] > 0
        truth = rendered[slide_id].tissue
        assert mask.shape == truth.shape
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.85, f"{slide_id}: IoU {iou:.3f}"


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_deterministic(tmp_path: Path) -> None:
    kw = dict(KW, n_slides=2, n_patients=1, negative_slides=0, width=1024, height=1024)
    sa, boxes_a = make_cohort(tmp_path / "a", **kw)
    sb, _ = make_cohort(tmp_path / "b", **kw)
    make_cohort(tmp_path / "c", **dict(kw, seed=kw["seed"] + 1))
    # Writing options change the files, not the cohort: same slides, patients and boxes.
    sd, boxes_d = make_cohort(tmp_path / "d", tile=128, jpeg_quality=70, **kw)
    pd.testing.assert_frame_equal(boxes_a, boxes_d)
    pd.testing.assert_frame_equal(sa.drop(columns="path"), sd.drop(columns="path"))
    a, b, c = (_digest(tmp_path / d) for d in "abc")
    assert len(a) == 4  # two slides and two tables, no leftover temporary files
    del a["samples.tsv"], b["samples.tsv"]  # holds the (different) absolute paths
    assert a == b
    pd.testing.assert_frame_equal(sa.drop(columns="path"), sb.drop(columns="path"))
    assert a["slides/S001.tiff"] != c["slides/S001.tiff"]


def test_write_pyramidal_tiff_colours(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1100, 0:1300]
    rgb = np.stack([(xx * 0.19) % 256, (yy * 0.23) % 256, ((xx + yy) * 0.1) % 256], -1)
    rgb = (rgb + rng.normal(0, 2, rgb.shape)).clip(0, 255).astype(np.uint8)
    path = tmp_path / "x.tiff"
    n = write_pyramidal_tiff(path, rgb, mpp=0.25, tile=128, quality=90, min_size=256)
    with openslide.OpenSlide(path) as slide:
        assert slide.level_count == n == 4
        assert slide.level_dimensions[0] == (1300, 1100)
        assert slide.level_dimensions[1] == (650, 550)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        back = np.asarray(slide.read_region((0, 0), 0, (1300, 1100)).convert("RGB"))
    assert np.abs(back.astype(int) - rgb).mean() < 10
    assert not list(tmp_path.glob(".*"))


def test_mimics_and_faint_lesions_change_only_what_they_say() -> None:
    kw = {"n_slides": 2, "n_patients": 2, "width": 3072, "height": 3072, "negative_slides": 0,
          "lesions_per_slide": (1, 1), "lesion_size_um": (500, 500), "seed": 4}  # fmt: skip
    plain = plan_cohort(**kw)[0]
    assert plain.lesion_contrast == 1.0 and plain.n_mimics == 0
    hard = plan_cohort(**kw, lesion_contrast=(0.4, 0.4), mimics_per_slide=2)[0]
    assert (hard.seed, hard.n_lesions) == (plain.seed, plain.n_lesions)
    a, b = render_slide(plain), render_slide(hard)
    np.testing.assert_array_equal(a.boxes, b.boxes)  # the same lesions, no new truth
    inside = np.zeros(a.rgb.shape[:2], bool)
    for x1, y1, x2, y2 in a.boxes:
        inside[y1:y2, x1:x2] = True
    diff = np.abs(a.rgb.astype(int) - b.rgb.astype(int)).sum(-1) > 30
    assert diff[~inside].sum() > 2000  # look-alike nuclei outside the lesions
    lesion_dark = [255 - s.rgb[inside].mean() for s in (a, b)]
    assert lesion_dark[1] < lesion_dark[0]  # fainter lesions


def test_atypical_mimics_take_lesion_colour_outside_the_truth() -> None:
    kw = {"n_slides": 1, "n_patients": 1, "width": 3072, "height": 3072, "negative_slides": 0,
          "lesions_per_slide": (1, 1), "lesion_size_um": (500, 500), "seed": 5,
          "mimics_per_slide": 2}  # fmt: skip
    benign, atypical = (render_slide(plan_cohort(**kw, mimic_contrast=c)[0]) for c in (0.0, 0.6))
    np.testing.assert_array_equal(benign.boxes, atypical.boxes)
    changed = np.abs(benign.rgb.astype(int) - atypical.rgb.astype(int)).sum(-1) > 20
    inside = np.zeros(changed.shape, bool)
    for x1, y1, x2, y2 in benign.boxes:
        inside[y1:y2, x1:x2] = True
    assert changed[~inside].sum() > 2000 and not changed[inside].any()
    with pytest.raises(ValueError, match="mimic_contrast"):
        plan_cohort(**kw, mimic_contrast=1.5)
