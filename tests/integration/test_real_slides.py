"""Rule tile_slide on real scanner files (Aperio JPEG and JPEG 2000, DICOM, Camelyon16 TIFF)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _workflow import snakemake, write_config
from PIL import Image

from histodetect.slides.reader import SlideReader
from histodetect.slides.synthetic import write_pyramidal_tiff

# slide_id: mpp for the sample sheet, or None to use the file's
SLIDES = {"cmu_svs": None, "tcga_jp2k": 0.25, "cmu_dicom": None, "camelyon_l5": 7.78}


@pytest.fixture(scope="module")
def paths(cmu_svs: Path, tcga_svs: Path, cmu_dicom: Path, camelyon_tif: Path) -> dict[str, Path]:
    """The real file of each slide id."""
    files = {"cmu_svs": cmu_svs, "tcga_jp2k": tcga_svs, "cmu_dicom": cmu_dicom}
    return {**files, "camelyon_l5": camelyon_tif}


@pytest.fixture(scope="module")
def run(module_dir: Callable[[str], Path], paths: dict[str, Path]) -> tuple[Path, str]:
    """One Snakemake run to the tiling summary over the real slides plus one blank slide."""
    workdir = module_dir("real_slides")
    blank = workdir / "blank.tiff"
    write_pyramidal_tiff(blank, np.full((1024, 1024, 3), 242, np.uint8), 0.5)
    rows = [
        (sid, f"p{i}", str(paths[sid]), "" if m is None else m)
        for i, (sid, m) in enumerate(SLIDES.items())
    ]
    rows.append(("blank", "p9", str(blank), ""))
    sheet = pd.DataFrame(rows, columns=["slide_id", "patient_id", "path", "mpp"])
    sheet.to_csv(workdir / "samples.tsv", sep="\t", index=False)
    (workdir / "annotations.csv").write_text("filename,x1,x2,y1,y2\n")
    write_config(
        workdir,
        {
            "demo": {"enabled": False},
            "samples": str(workdir / "samples.tsv"),
            "annotations": str(workdir / "annotations.csv"),
            # the Camelyon16 level-5 export (7.78 um/px) is read 3.9x magnified for 2 um/px
            # tiles: allowed here on purpose (the default limit, 2, refuses it)
            "tiling": {"max_upsample": 4.0},
        },
    )
    proc = snakemake(workdir, "results/qc/tiling_summary.tsv")
    return workdir, proc.stdout + proc.stderr


def tile_means(path: Path, tiles: pd.DataFrame) -> np.ndarray:
    """Mean RGB of each tile as the model would see it."""
    with SlideReader(path) as r:
        return np.array(
            [
                r.read_tile(int(t.x), int(t.y), int(t.level), int(t.read_px), int(t.tile_px))
                .reshape(-1, 3)
                .mean(0)
                for t in tiles.itertuples()
            ]
        )


def grid_left_out(tiles: pd.DataFrame, width: int, height: int) -> pd.DataFrame:
    """Grid cells that the tissue filter did not keep (same geometry as the kept tiles)."""
    size, stride = int(tiles["size"].iloc[0]), int(tiles["stride"].iloc[0])
    kept = set(zip(tiles.row, tiles.col, strict=True))
    cells = [
        (r, c)
        for r in range((height - size) // stride + 1)
        for c in range((width - size) // stride + 1)
        if (r, c) not in kept
    ]
    left = pd.DataFrame(cells, columns=["row", "col"])
    left["x"], left["y"] = left.col * stride, left.row * stride
    for col in ("size", "level", "read_px", "tile_px"):
        left[col] = tiles[col].iloc[0]
    return left


def test_summary_lists_every_slide_and_the_blank_one(run: tuple[Path, str]) -> None:
    workdir, console = run
    table = pd.read_csv(workdir / "results" / "qc" / "tiling_summary.tsv", sep="\t")
    assert table.slide_id.tolist() == [*SLIDES, "blank"]
    status = dict(zip(table.slide_id, table.status, strict=True))
    assert status == {**dict.fromkeys(SLIDES, "ok"), "blank": "no tissue"}
    mpp = dict(zip(table.slide_id, table.mpp, strict=True))
    assert mpp == pytest.approx(
        {"cmu_svs": 0.499, "tcga_jp2k": 0.25, "cmu_dicom": 0.499, "camelyon_l5": 7.78, "blank": 0.5}
    )
    assert "1 of 5 slides left out of the cohort: blank (" in console
    for sid in SLIDES:
        with Image.open(workdir / "results" / "qc" / f"{sid}.png") as png:
            assert min(png.size) > 100


@pytest.mark.parametrize("slide_id", list(SLIDES))
def test_tiles_are_tissue_and_glass_is_left_out(
    run: tuple[Path, str], paths: dict[str, Path], slide_id: str
) -> None:
    workdir, _ = run
    path = paths[slide_id]
    tiles = pd.read_parquet(workdir / "results" / "tiles" / f"{slide_id}.parquet")
    summary = json.loads((workdir / "results" / "tiles" / f"{slide_id}.json").read_text())
    assert len(tiles) == summary["tiles"] > 0
    assert (tiles.x == tiles.col * tiles["stride"]).all()
    assert (tiles.x + tiles["size"] <= summary["width"]).all()
    assert (tiles.y + tiles["size"] <= summary["height"]).all()
    kept = tile_means(path, tiles)
    left = tile_means(path, grid_left_out(tiles, summary["width"], summary["height"]))
    chroma = kept.max(1) - kept.min(1)
    # kept tiles are stained tissue: darker than glass and coloured (H&E), almost all of them
    assert (kept.mean(1) < 225).mean() > 0.9, slide_id
    assert (chroma > 12).mean() > 0.9, slide_id
    # the grid cells left out are mostly glass (bright or grey)
    left_glass = (left.mean(1) > 200) | (left.max(1) - left.min(1) < 12)
    assert left_glass.mean() > 0.6, slide_id
    assert np.median(kept.mean(1)) < np.median(left.mean(1)) - 20, slide_id


def test_dicom_tiles_match_the_svs_tiles(run: tuple[Path, str], paths: dict[str, Path]) -> None:
    """Both files hold the same scan: same tiles, and the same colours once DICOM is fixed."""
    workdir, _ = run
    dcm = pd.read_parquet(workdir / "results" / "tiles" / "cmu_dicom.parquet")
    svs = pd.read_parquet(workdir / "results" / "tiles" / "cmu_svs.parquet")
    assert abs(len(dcm) - len(svs)) <= 3
    both = dcm.merge(svs, on=["x", "y"], suffixes=("_dcm", "_svs"))
    assert len(both) >= len(svs) - 3
    # the same level-0 squares read from each file (at level 0, so pixels are comparable)
    same = both[["x", "y", "size_svs"]].rename(columns={"size_svs": "size"})
    same = same.assign(level=0, read_px=same["size"], tile_px=same["size"])
    a = tile_means(paths["cmu_dicom"], same)
    b = tile_means(paths["cmu_svs"], same)
    assert np.abs(a - b).max() < 4
    assert np.abs(a.mean(0) - b.mean(0)).max() < 2
