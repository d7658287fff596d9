"""Slide opening, mpp resolution and pyramid level choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from histodetect.errors import SlideError
from histodetect.slides.slide import choose_level, open_slide, read_thumbnail, slide_mpp


class FakeSlide:
    """Just enough of an OpenSlide for :func:`slide_mpp`."""

    def __init__(self, props: dict[str, str]) -> None:
        self.properties = props


# --- choose_level -------------------------------------------------------------------------


def test_choose_level_exact_match_reads_that_level_without_resize() -> None:
    # levels at 0.25, 1.0, 4.0 um/px; target 1.0 -> level 1 read as is
    c = choose_level((1.0, 4.0, 16.0), mpp0=0.25, tile_um=256, target_mpp=1.0)
    assert c.level == 1
    assert c.downsample == 4.0
    assert c.size0 == 1024
    assert c.read_px == 256
    assert c.tile_px == 256


def test_choose_level_picks_coarsest_not_coarser_than_target() -> None:
    # target 2.0: level 1 (1.0 um/px) is finer, level 2 (4.0) too coarse -> level 1, resized
    c = choose_level((1.0, 4.0, 16.0), mpp0=0.25, tile_um=256, target_mpp=2.0)
    assert c.level == 1
    assert c.size0 == 1024
    assert c.read_px == 256  # read from the finer level ...
    assert c.tile_px == 128  # ... and resized down to the target
    assert c.read_px > c.tile_px


def test_choose_level_target_finer_than_every_level_but_zero() -> None:
    c = choose_level((1.0, 4.0, 16.0), mpp0=0.25, tile_um=64, target_mpp=0.5)
    assert c.level == 0
    assert c.read_px == c.size0 == 256
    assert c.tile_px == 128


def test_choose_level_tolerance_five_percent() -> None:
    # level 1 at 1.01 um/px is within 5% of 1.0 -> chosen
    inside = choose_level((1.0, 4.0), mpp0=0.2525, tile_um=256, target_mpp=1.0)
    assert inside.level == 1
    # level 1 at 1.08 um/px is more than 5% coarser than 1.0 -> fall back to level 0
    outside = choose_level((1.0, 4.0), mpp0=0.27, tile_um=256, target_mpp=1.0)
    assert outside.level == 0
    assert outside.downsample == 1.0


def test_choose_level_unsorted_downsamples_still_coarsest() -> None:
    c = choose_level((1.0, 16.0, 4.0), mpp0=0.25, tile_um=256, target_mpp=1.0)
    assert c.level == 2
    assert c.downsample == 4.0


@pytest.mark.parametrize(
    ("downsamples", "mpp0", "tile_um", "target_mpp"),
    [
        ((1.0, 4.0, 16.0), 0.25, 256, 1.0),
        ((1.0, 4.0, 16.0), 0.25, 512, 4.0),
        ((1.0, 4.0, 16.0, 64.0), 0.25, 1024, 4.0),
        ((1.0, 4.000234, 16.0019), 0.2425, 256, 1.0),
        ((1.0, 2.0, 4.0, 8.0), 0.499, 128, 2.0),
    ],
)
def test_level0_size_is_x_times_downsample_not_level_plus_one(
    downsamples: tuple[float, ...], mpp0: float, tile_um: float, target_mpp: float
) -> None:
    """Regression: level-0 coordinates are ``x * downsample``, never ``(level + 1) * x``."""
    c = choose_level(downsamples, mpp0, tile_um, target_mpp)
    assert c.level >= 1
    assert c.size0 == round(tile_um / mpp0)
    assert c.read_px * c.downsample == pytest.approx(c.size0, rel=0.02)
    wrong = (c.level + 1) * c.read_px
    assert abs(wrong - c.size0) > 0.1 * c.size0


@pytest.mark.parametrize(("tile_um", "target_mpp"), [(0, 1.0), (128, 0), (-1, 1.0), (128, -2.0)])
def test_choose_level_rejects_non_positive(tile_um: float, target_mpp: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        choose_level((1.0,), 0.5, tile_um, target_mpp)


# --- slide_mpp ------------------------------------------------------------------------------


def test_slide_mpp_from_metadata(cmu_svs: Path) -> None:
    with open_slide(cmu_svs) as s:
        assert slide_mpp(s, cmu_svs) == pytest.approx(0.499)


def test_slide_mpp_override_wins(cmu_svs: Path) -> None:
    with open_slide(cmu_svs) as s:
        assert slide_mpp(s, cmu_svs, 0.25) == 0.25
        # NaN (an empty cell of the sample sheet) means "no override"
        assert slide_mpp(s, cmu_svs, float("nan")) == pytest.approx(0.499)


def test_slide_mpp_missing_names_file_and_mpp(tcga_svs: Path) -> None:
    with open_slide(tcga_svs) as s, pytest.raises(SlideError) as info:
        slide_mpp(s, tcga_svs)
    msg = str(info.value)
    assert str(tcga_svs) in msg
    assert "mpp" in msg
    assert "\n" not in msg


def test_slide_mpp_missing_accepts_override(tcga_svs: Path) -> None:
    with open_slide(tcga_svs) as s:
        assert slide_mpp(s, tcga_svs, 0.25) == 0.25


@pytest.mark.parametrize("bad", [0.0, -0.5])
def test_slide_mpp_rejects_non_positive_override(bad: float) -> None:
    with pytest.raises(SlideError, match="positive"):
        slide_mpp(FakeSlide({}), "a.svs", bad)


def test_slide_mpp_non_square_pixels() -> None:
    props = {openslide.PROPERTY_NAME_MPP_X: "0.25", openslide.PROPERTY_NAME_MPP_Y: "0.5"}
    with pytest.raises(SlideError, match="non-square"):
        slide_mpp(FakeSlide(props), "a.svs")
    props[openslide.PROPERTY_NAME_MPP_Y] = "0.251"
    assert slide_mpp(FakeSlide(props), "a.svs") == 0.25


def test_slide_mpp_zero_in_metadata_is_missing() -> None:
    with pytest.raises(SlideError, match="mpp"):
        slide_mpp(FakeSlide({openslide.PROPERTY_NAME_MPP_X: "0"}), "z.svs")


# --- open_slide -----------------------------------------------------------------------------


def _one_line_naming(err: SlideError, path: Path) -> str:
    msg = str(err)
    assert str(path) in msg
    assert "\n" not in msg
    return msg


def test_open_slide_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.svs"
    with pytest.raises(SlideError) as info:
        open_slide(p)
    assert "does not exist" in _one_line_naming(info.value, p)


def test_open_slide_text_file_named_svs(tmp_path: Path) -> None:
    p = tmp_path / "fake.svs"
    p.write_text("this is not a slide\n")
    with pytest.raises(SlideError) as info:
        open_slide(p)
    _one_line_naming(info.value, p)


def test_open_slide_folder(tmp_path: Path) -> None:
    d = tmp_path / "series"
    d.mkdir()
    with pytest.raises(SlideError) as info:
        open_slide(d)
    assert "folder" in _one_line_naming(info.value, d)


def test_open_slide_real(cmu_svs: Path) -> None:
    with open_slide(cmu_svs) as s:
        assert s.dimensions == (2220, 2967)


# --- read_thumbnail -------------------------------------------------------------------------


@pytest.mark.parametrize("thumb_mpp", [8.0, 4.0, 0.3])
def test_read_thumbnail_cmu(thumb_mpp: float, cmu_svs: Path) -> None:
    with open_slide(cmu_svs) as s:
        thumb, ds = read_thumbnail(s, 0.499, thumb_mpp)
        w0, h0 = s.dimensions
    expect_ds = max(thumb_mpp / 0.499, 1.0)
    assert thumb.dtype == np.uint8
    assert thumb.ndim == 3
    assert thumb.shape[2] == 3
    assert abs(thumb.shape[1] - w0 / expect_ds) <= 1
    assert abs(thumb.shape[0] - h0 / expect_ds) <= 1
    assert ds == pytest.approx(expect_ds, rel=0.01)
    # real H&E: neither blank nor black
    assert 100 < thumb.mean() < 250
    assert thumb.std() > 10


def test_read_thumbnail_narrow_slide_keeps_aspect(tmp_path: Path) -> None:
    """Regression: rows were scaled by the width's rounding (60 px wide -> 533 rows, not 500)."""
    import tifffile

    image = np.full((4000, 60, 3), 200, np.uint8)
    image[:, :, 0] = (np.arange(4000) // 16 % 256)[:, None]
    p = tmp_path / "narrow.tif"
    tifffile.imwrite(p, image, tile=(256, 256), compression="zlib", photometric="rgb")
    with open_slide(p) as s:
        thumb, ds = read_thumbnail(s, 1.0, 8.0)
    assert thumb.shape == (500, 8, 3)
    assert ds == pytest.approx(60 / 8)
    # the red ramp reaches the bottom of the thumbnail at the same place it does in the slide
    assert thumb[-1, :, 0].mean() == pytest.approx(image[-1, 0, 0], abs=3)


def test_read_thumbnail_takes_a_level_near_its_mpp_as_it_is(tmp_path: Path) -> None:
    """At 0.499 um/px, 8 um/px asks a downsample of 16.03: the level at 16 is the thumbnail,
    pixel for pixel, and the downsample returned is the level's."""
    from histodetect.slides.reader import SlideReader
    from histodetect.slides.synthetic import write_pyramidal_tiff

    rng = np.random.default_rng(0)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (64, 64, 3), np.uint8), 64, 0), 64, 1)
    path = tmp_path / "p.tiff"
    write_pyramidal_tiff(path, rgb, mpp=0.499, min_size=128)
    with SlideReader(path) as slide:
        level = slide.level_downsamples.index(16.0)
        want = slide.read_region((0, 0), level, slide.level_dimensions[level])
        thumb, ds = read_thumbnail(slide, 0.499, 8.0)
        assert ds == 16.0
        assert np.array_equal(thumb, want[..., :3])
        coarse, ds2 = read_thumbnail(slide, 0.499, 11.0)  # 22x: no level near, resampled
        assert coarse.shape[:2] == (round(4096 / 22.04), round(4096 / 22.04))
        assert ds2 == pytest.approx(22.04, rel=0.01)
