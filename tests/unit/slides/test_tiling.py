"""Tile grids: summed-area fractions and tiling of real slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from histodetect.columns import TILE_COLUMNS
from histodetect.errors import SlideError
from histodetect.slides import tiling
from histodetect.slides.synthetic import write_pyramidal_tiff
from histodetect.slides.tiling import (
    TilingSettings,
    excluded_report,
    failed_tiling,
    settings_from_config,
    summarise,
    tile_fractions,
    tile_slide,
)
from histodetect.slides.tissue import TissueSettings

# --- tile_fractions -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    ds=st.sampled_from([1, 2, 4, 8]),
    n=st.integers(1, 12),
)
def test_tile_fractions_match_brute_force(seed: int, h: int, w: int, ds: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((h, w)) < rng.random()
    # tiles on mask-pixel boundaries (level-0 coordinates = mask px * ds), possibly overhanging
    x = rng.integers(0, w + 3, n) * ds
    y = rng.integers(0, h + 3, n) * ds
    size = int(rng.integers(1, 10)) * ds
    got = tile_fractions(mask, x, y, size, float(ds))
    for i in range(n):
        px, py, ps = x[i] // ds, y[i] // ds, size // ds
        patch = mask[py : py + ps, px : px + ps]
        expect = patch.mean() if patch.size else 0.0
        assert got[i] == pytest.approx(expect), (i, px, py, ps)


def test_tile_fractions_simple_quadrants() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # top-left quadrant
    mask[2, 2] = True
    x = np.array([0, 8, 0, 8, 4])
    y = np.array([0, 0, 8, 8, 4])
    got = tile_fractions(mask, x, y, 8, 4.0)
    np.testing.assert_allclose(got, [1.0, 0.0, 0.0, 0.25, 0.5])


# --- tile_slide on real slides --------------------------------------------------------------


@pytest.fixture(scope="module")
def cmu_tiles(cmu_svs: Path) -> tuple[pd.DataFrame, dict]:
    s = TilingSettings(tile_um=128, target_mpp=1.0, tissue=TissueSettings(method="fast"))
    out = tile_slide(str(cmu_svs), "cmu", s)
    return out.tiles, out.summary


def test_cmu_tiles_geometry(cmu_tiles: tuple[pd.DataFrame, dict]) -> None:
    tiles, summary = cmu_tiles
    assert list(tiles.columns) == TILE_COLUMNS
    assert len(tiles) > 0
    size = round(128 / 0.499)
    assert (tiles["size"] == size).all()
    assert summary["tile_size_level0"] == size
    assert summary["mpp"] == pytest.approx(0.499)
    assert summary["tiles"] == len(tiles)
    w0, h0 = 2220, 2967
    assert ((tiles.x >= 0) & (tiles.y >= 0)).all()
    assert (tiles.x + tiles["size"] <= w0).all()
    assert (tiles.y + tiles["size"] <= h0).all()
    assert (tiles.x == tiles.col * tiles["size"]).all()
    assert (tiles.y == tiles.row * tiles["size"]).all()
    assert (tiles.tissue >= TilingSettings().min_tissue).all()
    assert (tiles.tissue <= 1.0).all()
    assert (tiles.level == 0).all()
    assert (tiles.tile_px == 128).all()
    assert (tiles.read_px == size).all()
    assert not tiles.duplicated(["x", "y"]).any()
    assert (tiles.slide_id == "cmu").all()
    for col in ("x", "y", "size", "row", "col", "level", "read_px", "tile_px"):
        assert tiles[col].dtype == np.int64, col


def test_cmu_tiles_are_tissue_not_glass(
    cmu_tiles: tuple[pd.DataFrame, dict], cmu_svs: Path
) -> None:
    tiles, _ = cmu_tiles
    with openslide.OpenSlide(str(cmu_svs)) as slide:
        means = [
            np.asarray(
                slide.read_region((int(x), int(y)), 0, (int(s), int(s))).convert("RGB")
            ).mean()
            for x, y, s in zip(tiles.x, tiles.y, tiles["size"], strict=True)
        ]
        # compare with the tiles the grid left out: those should be mostly glass
        size = int(tiles["size"].iloc[0])
        kept = set(zip(tiles.row, tiles.col, strict=True))
        left = [
            np.asarray(
                slide.read_region((c * size, r * size), 0, (size, size)).convert("RGB")
            ).mean()
            for r in range(2967 // size)
            for c in range(2220 // size)
            if (r, c) not in kept
        ]
    means = np.asarray(means)
    assert (means < 220).mean() > 0.8
    assert np.median(means) < np.median(left)


def test_tcga_with_override_reads_level_one(tcga_svs: Path) -> None:
    s = TilingSettings(tile_um=128, target_mpp=0.5, tissue=TissueSettings(method="fast"))
    out = tile_slide(str(tcga_svs), "tcga", s, mpp_override=0.25)
    tiles = out.tiles
    assert len(tiles) > 0
    assert (tiles.level == 1).all()
    assert (tiles["size"] == 512).all()
    assert (tiles.read_px == 256).all()
    assert (tiles.tile_px == 256).all()
    assert out.summary["level"] == 1
    assert out.summary["level_downsample"] == pytest.approx(2.0, rel=0.01)
    assert (tiles.x + tiles["size"] <= 4443).all()
    assert (tiles.y + tiles["size"] <= 3567).all()


def test_tcga_without_mpp_raises(tcga_svs: Path) -> None:
    with pytest.raises(SlideError) as info:
        tile_slide(str(tcga_svs), "tcga", TilingSettings(tile_um=128, target_mpp=0.5))
    assert str(tcga_svs) in str(info.value)
    assert "mpp" in str(info.value)


def test_camelyon_level5_mostly_glass(camelyon_tif: Path) -> None:
    s = TilingSettings(tile_um=512, target_mpp=8, tissue=TissueSettings(method="fast"))
    out = tile_slide(str(camelyon_tif), "tumor_001", s, mpp_override=7.78)
    tiles = out.tiles
    assert len(tiles) > 20
    size = round(512 / 7.78)
    assert (tiles["size"] == size).all()
    covered = len(tiles) * size * size / (3072 * 7168)
    assert covered < 0.3
    assert 0 < out.mask.mean() < 0.3
    assert out.summary["tissue_mm2"] > 1.0
    assert (tiles.x + size <= 3072).all()
    assert (tiles.y + size <= 7168).all()


# --- slides coarser than the tissue mask or the model --------------------------------------

COARSE_MPP = 3 * 7.78  # a downsampled export: the Camelyon16 level-5 image reduced 3x


@pytest.fixture(scope="module")
def coarse_slide(tmp_path_factory: pytest.TempPathFactory, camelyon_tif: Path) -> Path:
    """A real slide at 23 um/px, one level: coarser than tiling.tissue.mpp (8)."""
    with openslide.OpenSlide(str(camelyon_tif)) as slide:
        image = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
    small = np.asarray(image.reduce(3))
    path = tmp_path_factory.mktemp("coarse") / "coarse.tiff"
    write_pyramidal_tiff(path, small, COARSE_MPP, tile=128, min_size=10**6)
    return path


def test_coarse_slide_is_segmented_at_its_own_resolution(
    coarse_slide: Path, camelyon_tif: Path
) -> None:
    """pyFAST refused the 1 px dilation ("must be > 2"); now the morphology is left out."""
    s = TilingSettings(tile_um=512, target_mpp=32.0, tissue=TissueSettings(method="fast"))
    out = tile_slide(str(coarse_slide), "coarse", s)
    assert out.summary["tissue_mpp"] == pytest.approx(COARSE_MPP, rel=1e-3)
    assert out.summary["upsample"] == 1.0
    assert len(out.tiles) > 20
    # the same tissue as the original level-5 image tiled at 8 um/px, within a few percent
    ref = tile_slide(
        str(camelyon_tif), "ref", TilingSettings(tile_um=512, target_mpp=8), mpp_override=7.78
    )
    assert out.summary["tissue_mm2"] == pytest.approx(ref.summary["tissue_mm2"], rel=0.15)


def test_coarse_slide_refused_past_max_upsample(
    coarse_slide: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SlideError) as info:
        tile_slide(str(coarse_slide), "coarse", TilingSettings())  # 2 um/px: 11.7x
    assert str(coarse_slide) in str(info.value)
    assert "upsampled 11.7x, more than tiling.max_upsample (2)" in str(info.value)
    s = TilingSettings(tile_um=512, target_mpp=8.0, max_upsample=4.0)
    out = tile_slide(str(coarse_slide), "coarse", s)
    assert out.summary["upsample"] == pytest.approx(COARSE_MPP / 8.0, rel=1e-3)
    assert (out.tiles.read_px < out.tiles.tile_px).all()
    assert any("upsampled 2.92x" in r.message for r in caplog.records if r.levelname == "WARNING")


def test_upsampling_recorded_and_summarised(
    caplog: pytest.LogCaptureFixture, cmu_svs: Path
) -> None:
    """CMU (0.499 um/px) read for 0.25 um/px tiles is magnified 2x."""
    out = tile_slide(str(cmu_svs), "cmu", TilingSettings(tile_um=64, target_mpp=0.25))
    assert out.summary["upsample"] == pytest.approx(0.499 / 0.25, rel=1e-3)
    assert "upsampled 2.00x" in caplog.text
    plain = tile_slide(str(cmu_svs), "cmu", TilingSettings(tile_um=128, target_mpp=0.5))
    assert plain.summary["upsample"] == 1.0  # 0.499 for 0.5: within the mpp tolerance
    table = summarise([out.summary, plain.summary])
    assert table.upsample.tolist() == [pytest.approx(1.996), 1.0]
    with pytest.raises(SlideError, match="max_upsample"):
        tile_slide(
            str(cmu_svs), "cmu", TilingSettings(tile_um=64, target_mpp=0.25, max_upsample=1.5)
        )
    with pytest.raises(ValueError, match="max_upsample"):
        TilingSettings(max_upsample=0.5)


def test_any_failure_while_segmenting_or_tiling_is_one_slide_error(
    monkeypatch: pytest.MonkeyPatch, cmu_svs: Path
) -> None:
    def segmentation_breaks(*args: object) -> None:
        raise RuntimeError("Structuring element size given to Dilation must be > 2")

    monkeypatch.setattr(tiling, "tissue_mask", segmentation_breaks)
    with pytest.raises(SlideError) as info:
        tile_slide(str(cmu_svs), "cmu", TilingSettings())
    assert str(info.value) == (
        f"{cmu_svs}: tissue segmentation (fast) failed (RuntimeError: Structuring element size "
        "given to Dilation must be > 2)"
    )
    monkeypatch.undo()

    def grid_breaks(*args: object) -> None:
        raise IndexError("index 7 is out of bounds\nfor axis 0")

    monkeypatch.setattr(tiling, "tile_fractions", grid_breaks)
    with pytest.raises(SlideError) as info:
        tile_slide(str(cmu_svs), "cmu", TilingSettings())
    assert info.value.cause == "tiling failed (IndexError: index 7 is out of bounds for axis 0)"


def test_missing_slide_raises(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="does not exist"):
        tile_slide(str(tmp_path / "no-such.svs"), "x", TilingSettings())


# --- config and summary ---------------------------------------------------------------------


def test_settings_from_config_round_trip() -> None:
    cfg = {
        "tile_um": 256.0,
        "target_mpp": 0.5,
        "min_tissue": 0.3,
        "tissue": {"method": "otsu", "mpp": 4.0, "threshold": 70, "min_region_um2": 500.0},
    }
    s = settings_from_config(cfg)
    assert s.tile_um == 256.0
    assert s.target_mpp == 0.5
    assert s.min_tissue == 0.3
    assert s.tissue == TissueSettings(method="otsu", mpp=4.0, threshold=70, min_region_um2=500.0)
    assert cfg["tissue"]["method"] == "otsu", "the config dict is not consumed"
    back = {**s.__dict__, "tissue": dict(s.tissue.__dict__)}
    assert settings_from_config(back) == s


def test_settings_from_config_defaults_and_unknown_key() -> None:
    assert settings_from_config({}) == TilingSettings()
    with pytest.raises(TypeError):
        settings_from_config({"tile_size": 3})


def test_summarise_flags_zero_tile_slides() -> None:
    table = summarise(
        [
            {"slide_id": "a", "tiles": 12},
            {"slide_id": "b", "tiles": 0},
            {"slide_id": "c", "tiles": 1},
        ]
    )
    assert table.status.tolist() == ["ok", "no tissue", "ok"]
    assert table.slide_id.tolist() == ["a", "b", "c"]


# --- stride, magnification, level choice on real pyramids ----------------------------------


def test_half_stride_overlaps_and_keeps_grid_indices(cmu_svs: Path) -> None:
    base = TilingSettings(tile_um=128, target_mpp=1.0, tissue=TissueSettings(method="otsu"))
    half = TilingSettings(**{**base.__dict__, "stride_um": 64.0})
    # mpp 0.5 from the "sample sheet": 256 px tiles every 128 px
    full = tile_slide(str(cmu_svs), "cmu", base, mpp_override=0.5).tiles
    over = tile_slide(str(cmu_svs), "cmu", half, mpp_override=0.5).tiles
    size, stride = 256, 128
    assert (full["stride"] == size).all()
    assert (over["stride"] == stride).all()
    assert (over.x == over.col * stride).all()
    assert (over.y == over.row * stride).all()
    assert (over.x + over["size"] <= 2220).all()
    assert (over.y + over["size"] <= 2967).all()
    # about 4x as many tiles, and every full-stride tile is also on the half-stride grid
    assert 3.0 < len(over) / len(full) < 5.0
    assert set(zip(full.x, full.y, strict=True)) <= set(zip(over.x, over.y, strict=True))


def test_target_magnification_equals_its_mpp(cmu_svs: Path) -> None:
    by_mag = TilingSettings(tile_um=128, target_mpp=9.0, target_mag=5.0)
    assert by_mag.mpp == pytest.approx(2.0)
    by_mpp = TilingSettings(tile_um=128, target_mpp=2.0)
    a = tile_slide(str(cmu_svs), "cmu", by_mag).tiles
    b = tile_slide(str(cmu_svs), "cmu", by_mpp).tiles
    pd.testing.assert_frame_equal(a, b)
    assert (a.tile_px == 64).all()


@pytest.mark.parametrize(
    ("target_mpp", "level", "read_px", "tile_px"),
    [(2.0, 2, 64, 64), (1.5, 1, 128, 85), (0.499, 0, 257, 257)],
)
def test_dicom_pyramid_level_read_as_is_or_resized(
    target_mpp: float, level: int, read_px: int, tile_px: int, cmu_dicom: Path
) -> None:
    """2.0 um/px matches level 2 (0.499 * 4.002); 1.5 does not: read level 1 and resize."""
    s = TilingSettings(tile_um=128, target_mpp=target_mpp)
    tiles = tile_slide(str(cmu_dicom), "dicom", s).tiles
    assert len(tiles) > 10
    assert (tiles.level == level).all()
    assert (tiles.read_px == read_px).all()
    assert (tiles.tile_px == tile_px).all()
    with openslide.OpenSlide(str(cmu_dicom)) as slide:
        ds = slide.level_downsamples[level]
    np.testing.assert_allclose(tiles.mpp, 0.499 * ds, rtol=1e-9)


def test_dicom_tiles_match_svs_tiles(cmu_svs: Path, cmu_dicom: Path) -> None:
    """The DICOM and SVS files hold the same scan: same tiles once DICOM colours are fixed."""
    s = TilingSettings(tile_um=128, target_mpp=1.0)
    dcm = tile_slide(str(cmu_dicom), "dicom", s)
    svs = tile_slide(str(cmu_svs), "cmu", s)
    assert abs(len(dcm.tiles) - len(svs.tiles)) <= 3
    common = set(zip(dcm.tiles.x, dcm.tiles.y, strict=True)) & set(
        zip(svs.tiles.x, svs.tiles.y, strict=True)
    )
    assert len(common) >= 0.95 * len(svs.tiles)
    diff = np.abs(dcm.thumbnail.astype(int) - svs.thumbnail.astype(int)).mean()
    assert diff < 6
    assert (
        abs(dcm.summary["tissue_mm2"] - svs.summary["tissue_mm2"])
        < 0.05 * svs.summary["tissue_mm2"]
    )


@pytest.mark.parametrize("name", ["tile_um", "stride_um", "target_mpp", "target_mag"])
def test_settings_reject_non_positive(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        TilingSettings(**{name: 0.0})


def test_excluded_report_lists_empty_and_failed_slides() -> None:
    failed = failed_tiling("d", "d.svs", SlideError("d.svs", "slide file does not exist"))
    assert failed.tiles.empty and list(failed.tiles.columns) == TILE_COLUMNS
    table = summarise(
        [
            {"slide_id": "a", "path": "a.svs", "tiles": 3},
            {"slide_id": "b", "path": "b.svs", "tiles": 0},
            failed.summary,
        ]
    )
    assert table.status.tolist() == ["ok", "no tissue", "failed"]
    line = excluded_report(table)
    assert line == (
        "2 of 3 slides left out of the cohort: b (b.svs): no tissue tiles; "
        "d (d.svs): slide file does not exist"
    )
    assert excluded_report(table[table.tiles > 0]) == ""
