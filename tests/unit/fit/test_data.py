"""Tile reading, resizing, loaders and augmentations."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _fixtures import write_tiff
from PIL import Image

from histodetect.errors import InputError
from histodetect.fit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TileDataset,
    augment_batch,
    d4_transforms,
    make_loader,
    mixup,
    random_crop,
    slide_order,
)
from histodetect.fit.stain import hed_jitter


@pytest.fixture(scope="module")
def painted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Grey 1024 px slide with a red square at (256..320, 256..320) and a blue half beside it."""
    image = np.full((1024, 1024, 3), 128, np.uint8)
    image[256:320, 256:320] = (220, 10, 30)
    image[256:320, 320:352] = (10, 20, 230)
    return write_tiff(tmp_path_factory.mktemp("slide") / "painted.tiff", image)


def _table(path: Path, rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    x, y, read_px, tile_px = zip(*rows, strict=True)
    return pd.DataFrame(
        {"path": str(path), "x": x, "y": y, "level": 0, "read_px": read_px, "tile_px": tile_px}
    )


def test_reads_known_pixels(painted: Path) -> None:
    ds = TileDataset(_table(painted, [(256, 256, 64, 64), (0, 0, 64, 64)]))
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert (image == torch.tensor([220, 10, 30]).view(3, 1, 1)).all()
    assert (ds[1][0] == 128).all()
    assert label.dtype == torch.float32 and float(label) == 0.0


def test_resizes_and_keeps_orientation(painted: Path) -> None:
    image, _ = TileDataset(_table(painted, [(288, 256, 64, 32)]))[0]
    assert image.shape == (3, 32, 32)
    assert (image[:, :, :16] == torch.tensor([220, 10, 30]).view(3, 1, 1)).all()  # left: red
    assert (image[:, :, 16:] == torch.tensor([10, 20, 230]).view(3, 1, 1)).all()  # right: blue


def test_outside_slide_is_white(painted: Path) -> None:
    image, _ = TileDataset(_table(painted, [(992, 0, 64, 64)]))[0]
    assert (image[:, :, :32] == 128).all() and (image[:, :, 32:] == 255).all()


def test_normalised_output_and_labels(painted: Path) -> None:
    df = _table(painted, [(256, 256, 64, 64)]).assign(label=1)
    image, label = TileDataset(df, normalize=True)[0]
    expected = (torch.tensor([220, 10, 30]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD
    )
    assert image.dtype == torch.float32
    torch.testing.assert_close(image[:, 5, 5], expected)
    assert float(label) == 1.0


def test_pickle_drops_handles(painted: Path) -> None:
    ds = TileDataset(_table(painted, [(0, 0, 64, 64)]))
    ds[0]
    assert ds._slides
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone._slides and torch.equal(clone[0][0], ds[0][0])


def test_loader_workers_match_single_process(painted: Path) -> None:
    rows = [(x, y, 64, 32) for x in range(0, 512, 64) for y in range(128, 384, 64)]
    df = _table(painted, rows).assign(label=np.arange(len(rows)) % 2)
    single = torch.cat([b for b, _ in make_loader(df, 8, 0, False, 0)])
    multi = torch.cat([b for b, _ in make_loader(df, 8, 2, False, 0)])
    assert torch.equal(single, multi)
    first = [y.tolist() for _, y in make_loader(df, 32, 0, True, 3)]
    again = [y.tolist() for _, y in make_loader(df, 32, 0, True, 3)]
    assert first == again


def test_d4_transforms_are_the_eight_symmetries() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    outs = [t(x) for t in d4_transforms()]
    assert torch.equal(outs[0], x)
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    for t in d4_transforms():  # closed under composition
        for u in d4_transforms():
            assert any(torch.equal(t(u(x)), o) for o in outs)


def test_augment_batch_symmetry_and_jitter() -> None:
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = augment_batch(x, colour_jitter=0.0, generator=torch.Generator().manual_seed(2))
    for a, b in zip(plain, x, strict=True):
        assert any(torch.equal(a, t(b[None])[0]) for t in d4_transforms())
    j1 = augment_batch(x, colour_jitter=0.2, generator=torch.Generator().manual_seed(2))
    j2 = augment_batch(x, colour_jitter=0.2, generator=torch.Generator().manual_seed(2))
    assert torch.equal(j1, j2) and j1.min() >= 0 and j1.max() <= 1
    assert 0 < (j1 - plain).abs().mean() < 0.2


def test_random_crop_takes_a_square_of_each_image() -> None:
    x = torch.arange(2 * 10 * 10, dtype=torch.uint8).view(2, 1, 10, 10).expand(2, 3, 10, 10)
    a = random_crop(x, 4, torch.Generator().manual_seed(0))
    b = random_crop(x, 4, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 4, 4) and torch.equal(a, b)
    for crop, image in zip(a, x, strict=True):
        y0, x0 = divmod(int(crop[0, 0, 0]) - int(image[0, 0, 0]), 10)
        assert torch.equal(crop, image[:, y0 : y0 + 4, x0 : x0 + 4])
    assert torch.equal(random_crop(x, 10), x)
    with pytest.raises(ValueError, match="larger than the 10 x 10"):
        random_crop(x, 11)


def test_mixup_blends_pairs_of_the_batch() -> None:
    x = torch.rand(8, 3, 4, 4)
    mixed, perm, lam = mixup(x, 0.4, torch.Generator().manual_seed(0))
    mixed2, _, lam2 = mixup(x, 0.4, torch.Generator().manual_seed(0))
    assert 0.0 <= lam <= 1.0 and lam == lam2 and torch.equal(mixed, mixed2)
    assert sorted(perm.tolist()) == list(range(8))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    lams = [mixup(x, 0.2, torch.Generator().manual_seed(s))[2] for s in range(200)]
    assert np.mean([min(v, 1 - v) < 0.1 for v in lams]) > 0.5  # Beta(0.2, 0.2): mostly near 0/1
    with pytest.raises(ValueError, match="alpha"):
        mixup(x, 0.0)


def test_slide_order_groups_by_slide() -> None:
    df = pd.DataFrame(
        {"path": ["b", "a", "b", "a"], "x": [0, 64, 0, 0], "y": [64, 0, 0, 0], "level": 0}
    )
    assert slide_order(df).tolist() == [3, 1, 2, 0]


@pytest.fixture(scope="module")
def patch_files(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Two 100 px patches: a JPEG red left / blue right, a PNG solid green."""
    root = tmp_path_factory.mktemp("patches")
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50], image[:, 50:] = (220, 10, 30), (10, 20, 230)
    Image.fromarray(image).save(root / "a.jpg", quality=95)
    Image.fromarray(np.full((100, 100, 3), (20, 200, 40), np.uint8)).save(root / "b.png")
    return pd.DataFrame({"path": [str(root / "a.jpg"), str(root / "b.png")], "label": [2, 0]})


def test_reads_image_files_without_slide_geometry(patch_files: pd.DataFrame) -> None:
    ds = TileDataset(patch_files.assign(tile_px=20))
    image, label = ds[0]
    assert image.shape == (3, 20, 20) and float(label) == 2.0
    assert (image[0, :, :8] > 180).all() and (image[2, :, 12:] > 180).all()  # red left, blue right
    assert (ds[1][0] == torch.tensor([20, 200, 40]).view(3, 1, 1)).all()
    assert TileDataset(patch_files.assign(tile_px=100))[1][0].shape == (3, 100, 100)
    with pytest.raises(KeyError, match="tile_px"):
        TileDataset(patch_files)
    broken = patch_files.assign(tile_px=20, path=[patch_files.path[0] + ".missing", "x"])
    with pytest.raises(InputError, match=r"a\.jpg\.missing: cannot read image"):
        TileDataset(broken)[0]


def test_tile_transform_runs_on_each_tile(patch_files: pd.DataFrame) -> None:
    ds = TileDataset(patch_files.assign(tile_px=20), transform=lambda rgb: 255 - rgb)
    assert (ds[1][0] == torch.tensor([235, 55, 215]).view(3, 1, 1)).all()


def test_weighted_sampling_is_seeded_and_weighted(painted: Path) -> None:
    rows = [(x, 0, 64, 16) for x in range(0, 1024, 64)]
    df = _table(painted, rows).assign(label=np.arange(16))
    weights = np.where(np.arange(16) < 4, 2.0, 0.0)  # only tiles 0..3, 8 draws per epoch
    loader = make_loader(df, 4, 0, True, 5, weights=weights)
    first = torch.cat([y for _, y in loader])
    assert len(first) == 8 and set(first.int().tolist()) <= {0, 1, 2, 3}
    loader.generator.manual_seed(5)
    assert torch.equal(torch.cat([y for _, y in loader]), first)  # reseeding replays the draw
    with pytest.raises(ValueError, match="weights"):
        make_loader(df, 4, 0, True, 5, weights=-weights)


def test_hed_jitter_changes_stains_within_bounds() -> None:
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    plain = augment_batch(x, colour_jitter=0.0, generator=torch.Generator().manual_seed(2))
    kwargs = {"colour_jitter": 0.1, "jitter_space": "hed"}
    j1 = augment_batch(x, generator=torch.Generator().manual_seed(2), **kwargs)
    j2 = augment_batch(x, generator=torch.Generator().manual_seed(2), **kwargs)
    assert torch.equal(j1, j2) and j1.min() >= 0 and j1.max() <= 1
    assert 0.001 < (j1 - plain).abs().mean() < 0.1
    zero = hed_jitter(plain, 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(zero, plain, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="jitter_space"):
        augment_batch(x, jitter_space="lab")


def test_batches_are_the_items_one_by_one(
    painted: Path, cmu_svs: Path, patch_files: pd.DataFrame
) -> None:
    """``__getitems__`` (two slides interleaved, on threads) gives ``ds[i]`` for each index."""
    rows = [(x, y, 256, 128) for x in range(0, 768, 192) for y in (0, 200, 480)]
    df = pd.concat([_table(painted, rows), _table(cmu_svs, rows)]).assign(label=1.0)
    indices = [0, 12, 1, 13, 5, 5, 23]
    for threads in (1, 3):
        for kw in ({}, {"normalize": True, "transform": lambda rgb: 255 - rgb}):
            ds = TileDataset(df.reset_index(drop=True), threads=threads, **kw)  # type: ignore[arg-type]
            for (a, y), i in zip(ds.__getitems__(indices), indices, strict=True):
                b, z = ds[i]
                assert torch.equal(a, b) and torch.equal(y, z), (i, threads, kw)
    images = TileDataset(patch_files.assign(tile_px=20), threads=2)
    batch = images.__getitems__([1, 0])
    assert torch.equal(batch[0][0], images[1][0]) and torch.equal(batch[1][0], images[0][0])
    one = torch.cat([b for b, _ in make_loader(df, 5, 0, False, 0, threads=1)])
    two = torch.cat([b for b, _ in make_loader(df, 5, 1, False, 0, threads=2)])
    assert torch.equal(one, two)
