"""Plain PNG / JPEG / non-tiled TIFF fields tile like the same pixels in a pyramidal TIFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from histodetect.errors import SlideError
from histodetect.slides.reader import SlideReader
from histodetect.slides.tiling import TilingSettings, tile_slide

MPP = 0.2456
SETTINGS = TilingSettings(tile_um=32.0, stride_um=16.0, target_mpp=MPP, min_tissue=0.0)


def pyramidal_tiff(path: Path, rgb: np.ndarray, mpp: float) -> None:
    """Two-level tiled TIFF, lossless (zlib), with the resolution OpenSlide reads as mpp."""
    px_per_cm = 1e4 / mpp
    half = np.asarray(Image.fromarray(rgb).reduce(2))
    with tifffile.TiffWriter(path) as tif:
        for level, image in enumerate((rgb, half)):
            res = px_per_cm / 2**level
            tif.write(
                image,
                tile=(128, 128),
                compression="zlib",
                photometric="rgb",
                resolution=(res, res),
                resolutionunit="CENTIMETER",
            )


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory, mitos_field: Path) -> dict[str, Path]:
    """A 640 x 512 crop of a real MITOS field as JPEG, PNG, plain TIFF and pyramidal TIFF,
    all holding the JPEG's decoded pixels."""
    folder = tmp_path_factory.mktemp("plain")
    with Image.open(mitos_field) as image:
        image.crop((600, 700, 1240, 1212)).save(folder / "f.jpg", quality=90)
    with Image.open(folder / "f.jpg") as image:
        rgb = np.asarray(image.convert("RGB"))
    Image.fromarray(rgb).save(folder / "f.png")
    tifffile.imwrite(folder / "plain.tif", rgb, photometric="rgb")  # strips, not tiles
    pyramidal_tiff(folder / "pyr.tiff", rgb, MPP)
    return {k: folder / n for k, n in [("jpg", "f.jpg"), ("png", "f.png"), ("tif", "plain.tif"), ("pyr", "pyr.tiff")]}  # fmt: skip


def tiles_and_pixels(path: Path, settings: TilingSettings, mpp: float | None) -> tuple:
    tiled = tile_slide(str(path), "f", settings, mpp)
    with SlideReader(path) as reader:
        pixels = [
            reader.read_tile(t.x, t.y, t.level, t.read_px, t.tile_px)
            for t in tiled.tiles.itertuples()
        ]
    return tiled.tiles.drop(columns=["level", "mpp"]), np.stack(pixels)


@pytest.mark.parametrize("kind", ["png", "jpg", "tif"])
def test_plain_image_tiles_like_pyramidal_tiff(field: dict[str, Path], kind: str) -> None:
    tiles, pixels = tiles_and_pixels(field[kind], SETTINGS, MPP)
    ref_tiles, ref_pixels = tiles_and_pixels(field["pyr"], SETTINGS, None)
    assert len(tiles) == 8 * 6  # 640 x 512 px: tiles of 130 px every 65 px
    assert tiles.equals(ref_tiles)
    assert np.array_equal(pixels, ref_pixels)


def test_plain_image_downsampled_grid_matches(field: dict[str, Path]) -> None:
    coarse = TilingSettings(tile_um=32.0, stride_um=8.0, target_mpp=0.5, min_tissue=0.0)
    tiles, pixels = tiles_and_pixels(field["png"], coarse, MPP)
    ref_tiles, _ = tiles_and_pixels(field["pyr"], coarse, None)
    assert tiles.drop(columns="read_px").equals(ref_tiles.drop(columns="read_px"))
    assert pixels.shape[1:] == (64, 64, 3)
    assert (tiles.stride < tiles["size"]).all()


def test_plain_image_needs_mpp(field: dict[str, Path]) -> None:
    with pytest.raises(SlideError) as info:
        tile_slide(str(field["jpg"]), "f", SETTINGS)
    msg = str(info.value)
    assert str(field["jpg"]) in msg and "'mpp' column" in msg and "\n" not in msg


def test_broken_png_names_the_decoder(tmp_path: Path) -> None:
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(SlideError, match="its content is PNG image, not a slide format, nor"):
        SlideReader(p)
