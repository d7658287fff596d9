"""SlideReader: direct JPEG-tile reads match OpenSlide; DICOM YCbCr frames come out RGB."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from histodetect.slides.reader import SlideReader, composite_on_white, jpeg_stream_is_ycbcr
from histodetect.slides.synthetic import write_pyramidal_tiff

JPEG_TOLERANCE = 2  # libjpeg-turbo builds may differ in IDCT rounding


def openslide_rgb(path: Path, xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as s:
        return composite_on_white(s.read_region(xy, level, size)).astype(int)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory, cmu_svs: Path) -> Path:
    """A 3-level JPEG-tiled TIFF of real tissue (the CMU slide's top-left 1536 x 1536 px)."""
    with openslide.OpenSlide(str(cmu_svs)) as s:
        rgb = composite_on_white(s.read_region((400, 800), 0, (1536, 1536)))
    path = tmp_path_factory.mktemp("pyr") / "pyr.tiff"
    assert write_pyramidal_tiff(path, rgb, 0.5, tile=256, min_size=384) == 3
    return path


# --- direct JPEG-tile path ------------------------------------------------------------------


def test_svs_aligned_tiles_match_openslide(cmu_svs: Path) -> None:
    with SlideReader(cmu_svs) as r:
        assert r.direct_levels == (0,)
        for xy in [(0, 0), (480, 960), (1200, 1440), (1920, 2640)]:
            direct = r._read_direct(xy, 0, (240, 240))
            assert direct is not None, xy
            expect = openslide_rgb(cmu_svs, xy, 0, (240, 240))
            assert np.abs(direct.astype(int) - expect).max() <= JPEG_TOLERANCE
        # a 2 x 3 block of file tiles is stitched in the right order
        block = r.read_region((480, 720), 0, (720, 480)).astype(int)
        assert np.abs(block - openslide_rgb(cmu_svs, (480, 720), 0, (720, 480))).max() <= 2


@pytest.mark.parametrize(
    ("xy", "size"), [((10, 0), (256, 256)), ((0, 0), (200, 240)), ((1950, 2700), (256, 256))]
)
def test_svs_unaligned_reads_are_direct(
    xy: tuple[int, int], size: tuple[int, int], cmu_svs: Path
) -> None:
    """Reads that cut the 240 px file tiles (up to the slide's last pixel) are decoded directly."""
    with SlideReader(cmu_svs) as r:
        direct = r._read_direct(xy, 0, size)
        assert direct is not None
        assert r._decoded  # the cut tiles were kept for the neighbours
    assert direct.shape == (size[1], size[0], 3)
    assert np.abs(direct.astype(int) - openslide_rgb(cmu_svs, xy, 0, size)).max() <= JPEG_TOLERANCE


def test_svs_raster_reads_decode_each_tile_once(cmu_svs: Path) -> None:
    """A 256 px grid over 240 px file tiles, in raster order: every file tile decoded once."""
    with SlideReader(cmu_svs) as r:
        decoded = []
        decode = r._decode
        r._decode = lambda info, index: decoded.append(index) or decode(info, index)  # type: ignore[method-assign]
        for y in range(0, 2967 - 256, 256):
            for x in range(0, 2220 - 256, 256):
                r.read_tile(x, y, 0, 256, 256)
    assert len(decoded) == len(set(decoded))


@pytest.mark.parametrize(
    ("xy", "size"), [((2160, 0), (240, 240)), ((-240, 0), (240, 240)), ((2100, 2800), (256, 256))]
)
def test_svs_outside_falls_back(xy: tuple[int, int], size: tuple[int, int], cmu_svs: Path) -> None:
    with SlideReader(cmu_svs) as r:
        assert r._read_direct(xy, 0, size) is None
        got = r.read_region(xy, 0, size)
    assert got.shape == (size[1], size[0], 3)
    assert np.array_equal(got, openslide_rgb(cmu_svs, xy, 0, size))


def test_pyramid_levels_direct_match_openslide(pyramid: Path) -> None:
    with SlideReader(pyramid) as r, openslide.OpenSlide(str(pyramid)) as s:
        assert r.direct_levels == (0, 1, 2)
        assert s.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        for level, ds in [(0, 1), (1, 2), (2, 4)]:
            for col, row in [(0, 0), (1, 0), (0, 1)]:
                xy = (col * 256 * ds, row * 256 * ds)
                if (xy[0] + 256 * ds > 1536) or (xy[1] + 256 * ds > 1536):
                    continue
                direct = r._read_direct(xy, level, (256, 256))
                assert direct is not None, (level, xy)
                expect = openslide_rgb(pyramid, xy, level, (256, 256))
                assert np.abs(direct.astype(int) - expect).max() <= JPEG_TOLERANCE
                assert 100 < direct.mean() < 250  # real tissue, not a blank tile


def test_read_tile_resizes(pyramid: Path) -> None:
    with SlideReader(pyramid) as r:
        tile = r.read_tile(512, 256, 0, 256, 128)
        full = r.read_tile(512, 256, 0, 256, 256)
    assert tile.shape == (128, 128, 3)
    assert full.shape == (256, 256, 3)
    box = full.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.abs(tile.astype(float) - box).max() <= 1.0


def test_direct_off_uses_openslide_only(pyramid: Path) -> None:
    with SlideReader(pyramid, direct=False) as r:
        assert r.direct_levels == ()
        assert r._read_direct((0, 0), 0, (256, 256)) is None
        assert r.read_region((0, 0), 0, (256, 256)).shape == (256, 256, 3)


def test_reader_refuses_pickling(cmu_svs: Path) -> None:
    with SlideReader(cmu_svs) as r, pytest.raises(TypeError, match="per process"):
        pickle.dumps(r)


# --- DICOM colours --------------------------------------------------------------------------


def test_dicom_ycbcr_frames_converted_to_rgb(cmu_svs: Path, cmu_dicom: Path) -> None:
    with SlideReader(cmu_dicom) as d, SlideReader(cmu_svs) as svs:
        assert d.ycbcr_fix
        assert not svs.ycbcr_fix
        assert d.dimensions == svs.dimensions
        glass = d.read_region((0, 0), 0, (200, 200)).reshape(-1, 3).mean(0)
        assert (glass > 225).all(), glass  # raw YCbCr would be about (243, 127, 128)
        assert np.abs(glass - glass.mean()).max() < 6  # grey, not green/purple
        for xy in [(1000, 1200), (480, 960), (1500, 2000)]:
            a = d.read_region(xy, 0, (480, 480)).astype(int)
            b = svs.read_region(xy, 0, (480, 480)).astype(int)
            assert np.abs(a.reshape(-1, 3).mean(0) - b.reshape(-1, 3).mean(0)).max() < 3
            assert np.abs(a - b).mean() < 10  # same pixels after a second JPEG pass
        # lower levels live in other files of the series and need the same fix
        low = d.read_region((0, 0), 3, d.level_dimensions[3]).reshape(-1, 3).mean(0)
        ref = np.asarray(
            Image.fromarray(svs.read_region((0, 0), 0, svs.dimensions)).reduce(8)
        ).reshape(-1, 3)
        assert np.abs(low - ref.mean(0)).max() < 6


def _jpeg(mode: str = "RGB", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (16, 16), (200, 100, 50)).save(buf, "JPEG", **kwargs)
    return buf.getvalue()


def test_jpeg_colour_space_guess() -> None:
    assert jpeg_stream_is_ycbcr(_jpeg())  # PIL writes JFIF YCbCr
    sof = b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03" + b"R\x11\x00G\x11\x00B\x11\x00"
    assert not jpeg_stream_is_ycbcr(b"\xff\xd8" + sof + b"\xff\xda\x00\x02")
    ids123 = sof.replace(b"R", b"\x01").replace(b"G", b"\x02").replace(b"B", b"\x03")
    assert jpeg_stream_is_ycbcr(b"\xff\xd8" + ids123 + b"\xff\xda\x00\x02")
    adobe_rgb = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    assert not jpeg_stream_is_ycbcr(b"\xff\xd8" + adobe_rgb + ids123 + b"\xff\xda\x00\x02")
    adobe_ycc = adobe_rgb[:-1] + b"\x01"
    assert jpeg_stream_is_ycbcr(b"\xff\xd8" + adobe_ycc + ids123 + b"\xff\xda\x00\x02")


def test_composite_on_white_transparent_is_white() -> None:
    region = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    region.putpixel((1, 1), (10, 20, 30, 255))
    out = composite_on_white(region)
    assert out.shape == (4, 4, 3)
    assert (out[0, 0] == 255).all()
    assert out[1, 1].tolist() == [10, 20, 30]
