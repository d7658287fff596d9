"""The DAG of a large sample sheet: the jobs planned per rule, and a slide id not in the sheet.

Times belong to ``bench/dag.py``; these tests only count.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from _workflow import planned_jobs, snakemake, write_config

N_SLIDES = 2000


@pytest.fixture(scope="module")
def large_sheet(tmp_path_factory: pytest.TempPathFactory, cmu_svs: Path) -> Path:
    """A sample sheet of 2,000 hard links to one real slide, two per patient, boxes on half.

    Hard links: distinct paths of one content (the sheet refuses one file listed twice, and a
    symbolic link resolves to its target).
    """
    workdir = tmp_path_factory.mktemp("large_sheet")
    (workdir / "slides").mkdir()
    ids = [f"S{i:04d}" for i in range(N_SLIDES)]
    original = shutil.copy(cmu_svs, workdir / "original.svs")
    for s in ids:
        os.link(original, workdir / "slides" / f"{s}.svs")
    sheet = pd.DataFrame(
        {
            "slide_id": ids,
            "patient_id": [f"P{i // 2:04d}" for i in range(N_SLIDES)],
            "path": [f"slides/{s}.svs" for s in ids],
        }
    )
    sheet.to_csv(workdir / "samples.tsv", sep="\t", index=False)
    boxes = pd.DataFrame({"filename": [f"{s}.svs" for s in ids[::2]]})
    boxes.assign(x1=800, x2=1200, y1=900, y2=1400).to_csv(workdir / "annotations.csv", index=False)
    write_config(
        workdir,
        {"demo": {"enabled": False}, "samples": "samples.tsv", "annotations": "annotations.csv"},
    )
    return workdir


def test_dry_run_of_2000_slides_plans_each_rules_jobs(large_sheet: Path) -> None:
    proc = snakemake(large_sheet, "-n", "--quiet", "rules")
    # Up to the split_patients checkpoint; the per-slide jobs after it are planned once it has run.
    assert planned_jobs(proc.stdout + proc.stderr) == {
        "tile_slide": N_SLIDES,
        "label_tiles": N_SLIDES,
        "index_annotations": 1,
        "tiling_summary": 1,
        "split_patients": 1,
        "make_folds": 1,
        "undersample": 3,
        "train_fold": 3,
        "calibrate_fold": 3,
        "oof_threshold": 1,
        "fold_summary": 1,
        "training_curves": 1,
        "tune_boxes": 1,
        "evaluate": 1,
        "report_description": 1,
        "all": 1,
    }


def test_a_slide_not_in_the_sheet_fails_with_one_clear_line(large_sheet: Path) -> None:
    proc = snakemake(large_sheet, "-n", "results/labels/NOPE.parquet", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = [line for line in out.splitlines() if "not in the sample sheet" in line]
    assert lines == ["  InputError: samples.tsv: slide 'NOPE' is not in the sample sheet"], out


def test_a_partial_mil_override_on_the_command_line_merges_into_the_config_file(
    tmp_path: Path,
) -> None:
    # the file sets the task and classes; --config names two keys only, YAML inside a string
    write_config(
        tmp_path,
        {
            "demo": {"enabled": True, "graded": True, "grades": 3, "n_slides": 6, "n_patients": 6},
            "mil": {"enabled": False, "task": "ordinal", "classes": [0, 1, 2], "epochs": 4},
        },
    )
    proc = snakemake(tmp_path, "mil", "-n", "--config", "mil={enabled: true, model: mean}", "--quiet", "rules")  # fmt: skip
    jobs = planned_jobs(proc.stdout + proc.stderr)
    assert jobs["train_mil"] == 3 and jobs["mil_ensemble"] == 1, proc.stdout + proc.stderr

    for override, cause in [
        ("mil={model: nope}", "mil.model: 'nope' is not one of "
                              "['mean', 'max', 'abmil', 'clam_sb', 'transformer', 'concat', 'topk']"),
        ("mil={model: transformer, hidden: 30}", "mil.hidden (30) must be a multiple of "
                                                  "mil.transformer_heads (4)"),
    ]:  # fmt: skip
        bad = snakemake(tmp_path, "-n", "mil", "--config", override, check=False)
        lines = [line for line in (bad.stdout + bad.stderr).splitlines() if "mil." in line]
        assert bad.returncode != 0
        assert lines == [f"{tmp_path}/config.yaml + --config: {cause}"], lines
