"""The Pillow tiling QC picture: tile tint, tissue outline, title band."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histodetect.slides.qc import outline, tile_cover, tiling_qc_png


def _tiles(cells: list[tuple[int, int]], stride: int = 100) -> pd.DataFrame:
    rows, cols = zip(*cells, strict=True)
    return pd.DataFrame({"row": rows, "col": cols, "stride": stride, "size": stride})


def test_tile_cover_maps_grid_cells_to_thumbnail_pixels() -> None:
    # 10 level-0 px per thumbnail px, 100 px tiles: each cell is 10 x 10 thumbnail px
    cover = tile_cover(_tiles([(0, 1), (2, 0)]), (40, 40), downsample=10.0)
    assert cover[:10, 10:20].all() and cover[20:30, :10].all()
    assert cover.sum() == 200


def test_tile_cover_empty_table() -> None:
    assert not tile_cover(_tiles([(0, 0)]).iloc[:0], (5, 5), 1.0).any()


def test_outline_is_the_mask_border() -> None:
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    edge = outline(mask)
    assert edge.sum() == 16  # the 5 x 5 square's ring
    assert not edge[3, 3] and edge[1, 3]


def test_qc_png_tints_tiles_and_adds_title(tmp_path) -> None:
    thumb = np.full((40, 60, 3), 240, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[5:35, 5:55] = True
    out = tmp_path / "qc.png"
    tiling_qc_png(thumb, 10.0, mask, _tiles([(1, 1)]), out, title="s1: 1 tile")
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape == (40 + 30, 60, 3)
    body = img[30:]
    tinted, plain = body[15, 15], body[2, 2]
    assert tinted[2] > tinted[0] and tuple(plain) == (240, 240, 240)
    assert tuple(body[5, 20]) == (26, 77, 230)  # top edge of the tissue outline
    assert (img[:30] < 128).any()  # the title's text


def test_qc_png_refuses_a_mask_of_another_grid(tmp_path) -> None:
    thumb = np.full((40, 60, 3), 240, np.uint8)
    with pytest.raises(ValueError, match="does not match the 40 x 60 thumbnail"):
        tiling_qc_png(thumb, 10.0, np.zeros((20, 30), bool), _tiles([(0, 0)]), tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()
