"""Tissue masks on synthetic thumbnails."""

from __future__ import annotations

import numpy as np
import pytest

from histodetect.tissue import TissueSettings, otsu_threshold, tissue_mask

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
