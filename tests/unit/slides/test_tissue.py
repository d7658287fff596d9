"""Tissue masks on synthetic thumbnails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from histodetect.slides.tissue import TissueSettings, otsu_threshold, tissue_mask, whiten_grey

SIZE = 240
CENTRE = (110, 130)  # (row, col)
RADIUS = 60
PINK = (215, 120, 170)


def disc(radius: float, centre: tuple[int, int] = CENTRE, size: int = SIZE) -> np.ndarray:
    rr, cc = np.mgrid[:size, :size]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def thumbnail(seed: int = 0, dot: tuple[int, int] | None = None) -> np.ndarray:
    """White-ish glass with a little noise and a pink disc; optionally a small pink dot."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), 244, np.int16) + rng.integers(-6, 7, (SIZE, SIZE, 3))
    tissue = disc(RADIUS)
    img[tissue] = np.asarray(PINK) + rng.integers(-20, 21, (int(tissue.sum()), 3))
    if dot is not None:
        img[disc(3, dot)] = PINK
    return np.clip(img, 0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("method", ["fast", "otsu"])
def test_finds_the_disc_not_the_glass(method: str) -> None:
    truth = disc(RADIUS)
    mask = tissue_mask(thumbnail(), TissueSettings(method=method, mpp=8.0))
    assert mask.shape == truth.shape
    assert mask.dtype == bool
    assert iou(mask, truth) > 0.9
    # glass well away from the disc stays background
    far = ~disc(RADIUS + 10)
    assert mask[far].mean() < 0.01
    assert mask[disc(RADIUS - 5)].mean() > 0.99


@pytest.mark.parametrize("method", ["fast", "otsu"])
def test_small_regions_dropped(method: str) -> None:
    dot = (20, 220)  # far from the disc; 29 px * 64 um2 = ~1900 um2
    img = thumbnail(dot=dot)
    kept = tissue_mask(img, TissueSettings(method=method, mpp=8.0, min_region_um2=0.0))
    assert kept[dot], "without a minimum the dot is tissue"
    dropped = tissue_mask(img, TissueSettings(method=method, mpp=8.0, min_region_um2=20000.0))
    assert not dropped[disc(6, dot)].any()
    # the big disc (~11,000 px * 64 um2) survives the same minimum
    assert iou(dropped, disc(RADIUS)) > 0.9


def test_min_region_larger_than_disc_drops_everything() -> None:
    area_um2 = np.pi * RADIUS**2 * 64.0
    s = TissueSettings(method="otsu", mpp=8.0, min_region_um2=2 * area_um2)
    assert not tissue_mask(thumbnail(), s).any()


def test_otsu_threshold_separates_bimodal() -> None:
    rng = np.random.default_rng(1)
    low = rng.normal(40, 8, 5000)
    high = rng.normal(190, 12, 3000)
    t = otsu_threshold(np.concatenate([low, high]))
    assert low.max() - 2 < t < high.min() + 2  # anywhere in the empty gap is optimal
    assert (low < t).mean() > 0.999
    assert (high > t).mean() > 0.999


def test_otsu_threshold_two_values() -> None:
    values = np.array([10.0] * 100 + [200.0] * 50)
    t = otsu_threshold(values)
    assert 10 <= t < 200


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown tissue method 'magic'"):
        tissue_mask(thumbnail(), TissueSettings(method="magic"))


def test_blank_glass_has_no_tissue_fast() -> None:
    rng = np.random.default_rng(3)
    glass = (240 + rng.integers(-5, 6, (SIZE, SIZE, 3))).astype(np.uint8)
    assert not tissue_mask(glass, TissueSettings(method="fast", mpp=8.0)).any()


@pytest.mark.parametrize("method", ["fast", "otsu"])
def test_grey_marks_are_not_tissue(method: str) -> None:
    """A black fiducial cross and a grey border line are dark but uncoloured: glass."""
    img = thumbnail()
    img[10:60, 30:40] = 20  # black cross, far from the disc
    img[30:40, 10:60] = 20
    img[225:232, :] = 120  # grey scanner border along the bottom
    truth = disc(RADIUS)
    off = tissue_mask(img, TissueSettings(method=method, mpp=8.0, min_saturation=0))
    assert off[35, 35], "without the filter the cross is tissue"
    on = tissue_mask(img, TissueSettings(method=method, mpp=8.0, min_saturation=15))
    assert not on[:70, :70].any()
    assert not on[220:, :].any()
    assert iou(on, truth) > 0.9


@pytest.mark.parametrize(
    ("mpp", "dilation_um"), [(25.0, 24.0), (8.0, 0.0)], ids=["coarse thumbnail", "no dilation"]
)
def test_fast_morphology_below_three_pixels_is_left_out(mpp: float, dilation_um: float) -> None:
    """pyFAST refuses structuring elements of 1 or 2 px; a 1 px element changes nothing."""
    s = TissueSettings(method="fast", mpp=mpp, dilation_um=dilation_um, min_region_um2=0.0)
    mask = tissue_mask(thumbnail(), s)
    assert iou(mask, disc(RADIUS)) > 0.9
    from histodetect.slides.tissue import fast_element_px

    assert [fast_element_px(um, 25.0) for um in (0, 24, 40, 75, 100)] == [0, 0, 3, 3, 5]
    assert fast_element_px(24.0, 8.0) == 3


QUIET_SCRIPT = """
import numpy as np
from histodetect.slides.tissue import TissueSettings, tissue_mask
img = np.full((64, 64, 3), 245, np.uint8)
img[16:48, 16:48] = (150, 60, 160)
print(int(tissue_mask(img, TissueSettings(method="fast", min_region_um2=0.0)).sum()))
"""


def test_pyfast_prints_nothing_of_its_own() -> None:
    """No banner, no "Unable to open X display", no Qt notice: a job's output is ours."""
    proc = subprocess.run([sys.executable, "-c", QUIET_SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1024"], proc.stdout
    assert proc.stderr == ""


def test_whiten_grey_keeps_colour() -> None:
    img = np.array([[[250, 250, 245], [200, 120, 170], [30, 30, 30]]], np.uint8)
    out = whiten_grey(img, 15)
    assert out.tolist() == [[[255, 255, 255], [200, 120, 170], [255, 255, 255]]]
    assert img[0, 2].tolist() == [30, 30, 30], "input untouched"


def test_fast_mask_in_blocks_equals_one_pass() -> None:
    """Blocks with a margin give pyFAST's whole-image mask (morphology is local)."""
    from histodetect.slides.tissue import _fast_mask

    img = np.concatenate([thumbnail(seed=4), thumbnail(seed=5)[::-1]], axis=1)  # 240 x 480
    s = TissueSettings(method="fast", mpp=8.0)
    whole = _fast_mask(img, s, block_px=10_000)
    blocks = _fast_mask(img, s, block_px=100)
    assert whole.any()
    assert np.array_equal(whole, blocks)


def test_qc_view_caps_size() -> None:
    from histodetect.slides.tiling import TiledSlide, qc_view

    mask = np.zeros((3000, 1000), bool)
    mask[1000:2000] = True
    tiled = TiledSlide(None, np.full((3000, 1000, 3), 200, np.uint8), 4.0, mask, {})  # type: ignore[arg-type]
    thumb, ds, small = qc_view(tiled, max_px=1600)
    assert thumb.shape == (1500, 500, 3)
    assert ds == 8.0
    assert small.shape == (1500, 500)
    assert small[600].all() and not small[400].any()


RECOVER_SCRIPT = """
import sys
import fast
import numpy as np
from histodetect.slides.tissue import TissueSettings, _fast_mask
fast.Config.setKernelBinaryPath(sys.argv[1])
img = np.full((64, 64, 3), 245, np.uint8)
img[16:48, 16:48] = (150, 60, 160)
mask = _fast_mask(img, TissueSettings(method="fast", mpp=8.0, min_saturation=0))
print(int(mask.sum()))
"""


def test_fast_recovers_from_a_broken_kernel_cache(tmp_path: Path) -> None:
    cache = str(tmp_path / "kernels") + "/"

    def run() -> int:
        proc = subprocess.run(
            [sys.executable, "-c", RECOVER_SCRIPT, cache], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.strip().splitlines()[-1])

    first = run()
    files = list((tmp_path / "kernels").rglob("*.cache"))
    assert first > 0 and files
    for f in files:  # as if a job had been killed while writing them
        f.write_text("cut short\n")
    assert run() == first
    assert all(
        len(f.read_text().splitlines()) >= 3 for f in (tmp_path / "kernels").rglob("*.cache")
    )


@pytest.mark.parametrize(("dilation", "erosion"), [(3, 3), (5, 0), (0, 7), (9, 5), (13, 13)])
def test_host_closing_equals_pyfasts_own(dilation: int, erosion: int, cmu_svs: Path) -> None:
    """Our closing of pyFAST's threshold mask is pyFAST's own closing, pixel for pixel,
    on a real slide's thumbnail and on random blobs touching every edge."""
    from scipy import ndimage

    from histodetect.slides.reader import SlideReader
    from histodetect.slides.slide import read_thumbnail
    from histodetect.slides.tissue import fast_closing, fast_threshold, import_fast

    fast = import_fast()
    with SlideReader(cmu_svs) as slide:
        real, _ = read_thumbnail(slide, 0.499, 4.0)
    rng = np.random.default_rng(dilation + erosion)
    blobs = ndimage.gaussian_filter(rng.random((157, 233)), 2.5) > 0.5
    blob_rgb = np.where(blobs[..., None], (150, 60, 160), (250, 250, 250)).astype(np.uint8)
    for image in (whiten_grey(real, 15), blob_rgb):
        threshold = fast_threshold(fast, image, 85, 4.0)
        theirs = fast_threshold(fast, image, 85, 4.0, dilation, erosion)
        ours = fast_closing(threshold, dilation, erosion)
        assert 0.05 < theirs.mean() < 0.95
        assert not np.array_equal(theirs, threshold), "the closing changes something"
        assert np.array_equal(ours, theirs)
