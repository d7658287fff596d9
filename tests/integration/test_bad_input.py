"""A cohort with broken slides still finishes; each broken slide gets one clear line."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest
from _workflow import snakemake, write_config

from histodetect.slides.synthetic import make_cohort, write_pyramidal_tiff

# slide id -> (how the file is made, the cause the one-line error must give)
BROKEN = {
    "missing": "slide file does not exist",
    "truncated": "truncated or corrupt file",
    "textfile": "its content is text, not a slide format",
    "pngfile": "its content is PNG image, not a slide format",
    "nompp": "no mpp in the slide metadata",
    # 25 um/px: pyFAST's morphology raised (a traceback); read for 2 um/px tiles it is refused
    "coarse": "upsampled 12.5x, more than tiling.max_upsample (2)",
}


def make_broken(folder: Path, svs: Path, svs_without_mpp: Path) -> dict[str, Path]:
    """The broken slides of the matrix (made from two real ones), plus a slide of blank glass."""
    folder.mkdir(parents=True)
    paths = {name: folder / f"{name}.svs" for name in BROKEN}
    data = svs.read_bytes()
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["textfile"].write_text("not a slide\n")
    paths["pngfile"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    shutil.copyfile(svs_without_mpp, paths["nompp"])
    with openslide.OpenSlide(str(svs)) as slide:  # a downsampled export at 25 um/px
        cmu = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
    paths["coarse"] = folder / "coarse.tiff"
    write_pyramidal_tiff(paths["coarse"], np.asarray(cmu.reduce(50)), 25.0, tile=16)
    paths["blank"] = folder / "blank.tiff"
    write_pyramidal_tiff(paths["blank"], np.full((2048, 2048, 3), 242, np.uint8), 0.5)
    return paths


@pytest.fixture(scope="module")
def broken_run(
    module_dir: Callable[[str], Path], cmu_svs: Path, tcga_svs: Path
) -> tuple[Path, str]:
    workdir = module_dir("broken_run")
    samples, _ = make_cohort(
        workdir / "cohort",
        n_slides=6,
        n_patients=3,
        width=3072,
        height=3072,
        lesions_per_slide=(1, 2),
        lesion_size_um=(400, 600),
        negative_slides=0,
        seed=5,
    )
    extra = [
        {"slide_id": name, "patient_id": f"X{i}", "path": str(path), "mpp": np.nan}
        for i, (name, path) in enumerate(make_broken(workdir / "broken", cmu_svs, tcga_svs).items())
    ]
    sheet = pd.concat([samples, pd.DataFrame(extra)], ignore_index=True)
    sheet.to_csv(workdir / "samples.tsv", sep="\t", index=False)
    write_config(
        workdir,
        {
            "demo": {"enabled": False},
            "samples": str(workdir / "samples.tsv"),
            "annotations": str(workdir / "cohort" / "annotations.csv"),
            "split": {"test_fraction": 0.34},
            "folds": 2,
            "train": {"epochs": 1, "batch_size": 32},
        },
    )
    proc = snakemake(workdir)
    return workdir, proc.stdout + proc.stderr


def test_cohort_finishes_despite_broken_slides(broken_run: tuple[Path, str]) -> None:
    workdir, _ = broken_run
    assert (workdir / "results" / "metrics" / "detection.json").exists()
    split = pd.read_csv(workdir / "results" / "splits" / "split.tsv", sep="\t")
    left_out = set(split.loc[split.split == "excluded", "slide_id"])
    assert left_out == {*BROKEN, "blank"}


@pytest.mark.parametrize("slide", sorted(BROKEN))
def test_each_broken_slide_has_one_clear_line(broken_run: tuple[Path, str], slide: str) -> None:
    workdir, console = broken_run
    log = (workdir / "logs" / "tile_slide" / f"{slide}.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert f"/{slide}." in errors[0] and BROKEN[slide] in errors[0]
    assert "Traceback" not in log
    # The console names it too, once in the job's output and once in the run summary.
    assert any(f"/{slide}." in line and BROKEN[slide] in line for line in console.splitlines())
    assert f"histodetect: slide {slide} left out" in console
    table = pd.read_csv(workdir / "results" / "qc" / "tiling_summary.tsv", sep="\t")
    row = table.set_index("slide_id").loc[slide]
    assert row.status == "failed" and BROKEN[slide] in row.error


def test_jobs_print_none_of_pyfast_s_banner(broken_run: tuple[Path, str]) -> None:
    workdir, console = broken_run
    logs = "".join(p.read_text() for p in (workdir / "logs" / "tile_slide").glob("*.log"))
    for noise in ("Powered by", "fast-imaging.github.io", "X display", "XDG_RUNTIME_DIR"):
        assert noise not in console and noise not in logs, noise


def test_tiling_summary_records_upsampling(broken_run: tuple[Path, str]) -> None:
    workdir, _ = broken_run
    table = pd.read_csv(workdir / "results" / "qc" / "tiling_summary.tsv", sep="\t")
    assert (table.loc[table.status == "ok", "upsample"] == 1.0).all()


def test_blank_glass_is_reported_not_silent(broken_run: tuple[Path, str]) -> None:
    workdir, console = broken_run
    table = pd.read_csv(workdir / "results" / "qc" / "tiling_summary.tsv", sep="\t")
    row = table.set_index("slide_id").loc["blank"]
    assert row.status == "no tissue" and row.tiles == 0
    assert "slide blank left out" in console and "no tissue tiles" in console


def test_fail_mode_stops_the_job_and_keep_going_finishes_the_rest(tmp_path: Path) -> None:
    samples, _ = make_cohort(
        tmp_path / "cohort",
        n_slides=2,
        n_patients=2,
        width=2048,
        height=2048,
        lesion_size_um=(300, 400),
        negative_slides=0,
    )
    bad = {
        "slide_id": "missing",
        "patient_id": "X",
        "path": str(tmp_path / "missing.svs"),
        "mpp": np.nan,
    }
    pd.concat([samples, pd.DataFrame([bad])]).to_csv(
        tmp_path / "samples.tsv", sep="\t", index=False
    )
    write_config(
        tmp_path,
        {
            "demo": {"enabled": False},
            "samples": str(tmp_path / "samples.tsv"),
            "annotations": str(tmp_path / "cohort" / "annotations.csv"),
            "bad_slides": "fail",
        },
    )
    proc = snakemake(tmp_path, "--keep-going", "results/qc/tiling_summary.tsv", check=False)
    assert proc.returncode != 0
    console = proc.stdout + proc.stderr
    assert "missing.svs: slide file does not exist" in console
    assert "Traceback" not in (tmp_path / "logs" / "tile_slide" / "missing.log").read_text()
    # The other slides were tiled; the failed one left nothing that looks finished.
    assert {p.name for p in (tmp_path / "results" / "tiles").glob("*.parquet")} == {
        f"{s}.parquet" for s in samples.slide_id
    }
