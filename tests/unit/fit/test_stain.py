"""Stain normalisation (Macenko, Reinhard) on real H&E and on synthetic stains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from histodetect.fit.stain import StainNormalizer, lab_to_rgb, macenko_stains, rgb_to_lab


@pytest.fixture(scope="module")
def he_tile(cmu_svs: Path) -> np.ndarray:
    """A 256 px tissue region of a real H&E slide."""
    with openslide.OpenSlide(cmu_svs) as slide:
        return np.asarray(slide.read_region((1000, 1200), 0, (256, 256)).convert("RGB"))


def test_lab_round_trip() -> None:
    rgb = np.random.default_rng(0).integers(1, 256, (500, 3)).astype(np.uint8)
    assert np.abs(lab_to_rgb(rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1


def test_macenko_finds_haematoxylin_and_eosin(he_tile: np.ndarray) -> None:
    fitted = macenko_stains(he_tile)
    assert fitted is not None
    he, max_c = fitted
    np.testing.assert_allclose(np.linalg.norm(he, axis=0), 1, atol=1e-6)
    assert (he > 0).all() and (max_c > 0).all()
    assert he[0, 0] > he[0, 1]  # haematoxylin absorbs red more than eosin does
    assert macenko_stains(np.full((32, 32, 3), 250, np.uint8)) is None  # glass only


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalisation_removes_a_stain_shift(he_tile: np.ndarray, method: str) -> None:
    shifted = np.clip(he_tile.astype(int) * [0.8, 1.0, 1.1] + [0, -20, 10], 0, 255).astype(np.uint8)
    norm = StainNormalizer(method)
    a, b = norm(he_tile), norm(shifted)
    assert a.shape == he_tile.shape and a.dtype == np.uint8
    before = np.abs(he_tile.mean((0, 1)) - shifted.mean((0, 1))).sum()
    after = np.abs(a.mean((0, 1)).astype(float) - b.mean((0, 1))).sum()
    assert after < 0.5 * before
    glass = np.full((16, 16, 3), 245, np.uint8)
    assert np.array_equal(norm(glass), glass)


def test_reference_image_sets_the_target(he_tile: np.ndarray, tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(he_tile).save(tmp_path / "ref.png")
    for method in ("macenko", "reinhard"):
        out = StainNormalizer(method, tmp_path / "ref.png")(he_tile)
        assert np.abs(out.astype(int) - he_tile).mean() < 12  # already the target: little change
    with pytest.raises(ValueError, match="macenko"):
        StainNormalizer("vahadane")
