"""SlideReader.read_tiles: the pixels of read_tile for every location, each file tile decoded once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from histodetect.slides import threads as reading
from histodetect.slides.reader import SlideReader
from histodetect.slides.synthetic import make_cohort
from histodetect.slides.threads import map_on_threads, threads_per_worker

Location = tuple[int, int, int, int, int]  # x, y, level, read_px, tile_px


@pytest.fixture(scope="module")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-level synthetic pyramid (JPEG tiles of 256 px) made by the package."""
    out = tmp_path_factory.mktemp("synthetic")
    samples, _ = make_cohort(
        out, n_slides=1, n_patients=1, width=2048, height=2048, negative_slides=0, seed=3
    )
    return Path(samples.path.iloc[0])


def locations(reader: SlideReader) -> list[Location]:
    """Tiles on every level: aligned and not, sharing file tiles, resized down and up, and
    crossing the slide's edge (OpenSlide's part)."""
    width, height = reader.dimensions
    out: list[Location] = []
    for level, ds in enumerate(reader.level_downsamples[:3]):
        d = round(ds)
        step = 200 * d  # neighbours 200 px apart share the file tiles between them
        for k in range(6):
            out.append((k * step, (k % 3) * step, level, 256, 256))
        out += [(d * 96, d * 64, level, 512, 224), (d * 40, d * 8, level, 128, 256)]
        out.append((width - 100 * d, height - 100 * d, level, 256, 256))  # past the edge
    out.append((0, 0, 0, 256, 256))  # the same tile twice in one batch
    out.append((-64, 32, 0, 256, 128))
    return out


def assert_same_as_read_tile(path: Path) -> SlideReader:
    with SlideReader(path) as one, SlideReader(path) as batched:
        locs = locations(one)
        expect = [one.read_tile(*loc) for loc in locs]
        for threads in (1, 3):
            got = batched.read_tiles(locs, threads=threads)
            assert len(got) == len(expect)
            for loc, a, b in zip(locs, got, expect, strict=True):
                assert a.shape == b.shape == (loc[4], loc[4], 3), loc
                assert np.array_equal(a, b), (path.name, loc, threads)
        return batched


@pytest.mark.parametrize("name", ["cmu_svs", "tcga_svs", "cmu_dicom", "camelyon_tif"])
def test_real_slides_read_as_read_tile(name: str, request: pytest.FixtureRequest) -> None:
    """Aperio JPEG and JPEG 2000, DICOM and the Camelyon16 JPEG TIFF: equal pixels."""
    assert_same_as_read_tile(request.getfixturevalue(name))


def test_synthetic_pyramid_reads_as_read_tile(synthetic_slide: Path) -> None:
    with SlideReader(synthetic_slide) as r:
        assert r.direct_levels == (0, 1, 2)
    assert_same_as_read_tile(synthetic_slide)


def test_plain_image_reads_as_read_tile(mitos_field: Path) -> None:
    with SlideReader(mitos_field) as one:
        locs: list[Location] = [(0, 0, 0, 256, 256), (2000, 2000, 0, 256, 128), (5, 9, 0, 64, 96)]
        expect = [one.read_tile(*loc) for loc in locs]
        got = one.read_tiles(locs, threads=2)
    assert all(np.array_equal(a, b) for a, b in zip(got, expect, strict=True))


@pytest.mark.parametrize("name", ["cmu_svs", "tcga_svs", "cmu_dicom", "camelyon_tif"])
def test_regions_on_threads_read_as_on_one(name: str, request: pytest.FixtureRequest) -> None:
    """``SlideReader(threads=)``: a region's file tiles decoded in parallel (a thumbnail's
    strips, a large region), the same pixels as one thread; and as OpenSlide's level
    regions where the direct path serves them."""
    path = request.getfixturevalue(name)
    with SlideReader(path) as one, SlideReader(path, threads=3) as many:
        assert many.threads == 3
        width, height = one.dimensions
        for level, ds in enumerate(one.level_downsamples[:3]):
            d = round(ds)
            lw, lh = one.level_dimensions[level]
            for x, y, w, h in (
                (0, 0, min(lw, 900), min(lh, 300)),  # a strip over several file tiles
                (d * 17, d * 250, 300, 500),  # cutting tiles on every side
                (width - 200 * d, height - 150 * d, 400, 300),  # past the slide's edge
            ):
                a = one.read_region((x, y), level, (w, h))
                b = many.read_region((x, y), level, (w, h))
                assert a.shape == b.shape == (h, w, 3)
                assert np.array_equal(a, b), (path.name, level, x, y)


def test_region_file_tiles_decoded_on_threads(cmu_svs: Path) -> None:
    """A region over 4 x 2 file tiles: each decoded once, on the reader's pool of threads."""
    with SlideReader(cmu_svs, threads=2) as r:
        calls: list[tuple[int, str]] = []
        decode = r._decode

        def named(info, index):  # type: ignore[no-untyped-def]
            calls.append((index, threading.current_thread().name))
            return decode(info, index)

        r._decode = named  # type: ignore[method-assign]
        r.read_region((0, 0), 0, (4 * 240, 2 * 240))
    indices = sorted(i for i, _ in calls)
    across = (2220 + 239) // 240  # CMU-1-Small-Region: 2220 px wide, 240 px file tiles
    assert indices == sorted([0, 1, 2, 3, across, across + 1, across + 2, across + 3])
    assert all(name.startswith("histodetect-read") for _, name in calls)


def counting_decodes(reader: SlideReader) -> list[tuple[int, int]]:
    """Record every file tile the reader decodes, as (tile height, index)."""
    decoded: list[tuple[int, int]] = []
    decode = reader._decode

    def counted(info, index):  # type: ignore[no-untyped-def]
        decoded.append((info.tile_h, index))
        return decode(info, index)

    reader._decode = counted  # type: ignore[method-assign]
    return decoded


def test_each_file_tile_decoded_once_per_batch(cmu_svs: Path) -> None:
    """256 px tiles 128 px apart over 240 px file tiles: neighbours share most file tiles."""
    batch = [(x, y, 0, 256, 256) for y in range(0, 1024, 128) for x in range(0, 1024, 128)]
    with SlideReader(cmu_svs, cache_bytes=0) as r:  # no cache: the batch alone decodes once
        decoded = counting_decodes(r)
        r.read_tiles(batch, threads=2)
        assert len(decoded) == len(set(decoded)) == 25  # file tiles 0-4 by 0-4
        again = len(decoded)
        r.read_tiles(batch[:4], threads=2)
        assert len(decoded) > again  # nothing was kept across batches without a cache
    with SlideReader(cmu_svs) as r:  # with the cache, the next batch decodes nothing again
        decoded = counting_decodes(r)
        r.read_tiles(batch, threads=2)
        r.read_tiles(batch[::-1], threads=2)
        assert len(decoded) == 25


def test_threads_split_between_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads_per_worker(8, 0) == 8
    assert threads_per_worker(8, 3) == 2
    assert threads_per_worker(2, 4) == 1
    assert threads_per_worker(None, 1) >= 1
    square: Callable[[int], int] = lambda v: v * v  # noqa: E731
    monkeypatch.setattr(reading, "_JOB_THREADS", [])  # a job's setting, undone after the test
    assert reading.use_job_threads(None, 3) == 3 == reading.reading_threads()
    assert threads_per_worker(None, 2) == 1
    assert reading.use_job_threads(8, 2) == 2  # never more than the job's cores
    assert reading.use_job_threads(1, 4) == 1 == threads_per_worker(None, 0)
    assert map_on_threads(square, list(range(50)), 4) == [v * v for v in range(50)]
