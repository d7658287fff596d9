"""`snakemake mil` on a small graded cohort: slide labels only, no annotations read."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _workflow import snakemake, write_config
from mlflow.tracking import MlflowClient
from PIL import Image

from histodetect.features.store import read_features

pytestmark = pytest.mark.integration

# 6 slides of grade 0-2 (the number of hidden lesions), 2 test slides, 2 folds; 64 px tiles.
CONFIG = {
    "demo": {
        "enabled": True, "graded": True, "grades": 3, "n_slides": 6, "n_patients": 6,
        "width": 2048, "height": 2048, "mpp": 1.0, "lesion_size_um": [250, 400], "seed": 3,
        "lesion_contrast": [1.0, 1.0], "mimics_per_slide": 0,
    },
    "tiling": {"tile_um": 64.0, "target_mpp": 1.0},
    "split": {"test_fraction": 0.25, "stratify_by": None},
    "folds": 2,
    "features": {"batch_size": 256},  # source auto: the cohort's own encoder, no annotations
    "ssl": {"epochs": 1, "max_tiles": 96, "batch_size": 16, "num_workers": 0},
    "mil": {"enabled": True, "task": "ordinal", "classes": [0, 1, 2], "model": "clam_sb",
            "epochs": 4, "clam_k": 4, "bootstrap": 50},
}  # fmt: skip


@pytest.fixture(scope="module")
def mil_run(module_dir: Callable[[str], Path]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The run of target mil on the small graded cohort (the predict test reuses its models)."""
    workdir = module_dir("mil_run")
    write_config(workdir, CONFIG)
    return workdir, snakemake(workdir, "mil")


def test_graded_slides_train_fold_models_ensemble_and_attention_maps(
    mil_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    tmp_path, proc = mil_run
    assert not (tmp_path / "results" / "labels").exists()  # no annotation was read
    page = (tmp_path / "results" / "report" / "mil.rst").read_text()  # the report's first page
    assert "histodetect: slide labels" in page and "   * - Out-of-fold AUC" in page
    res = tmp_path / "results" / "mil"
    folds = pd.read_csv(res / "folds.tsv", sep="\t", dtype={"slide_id": str})
    sheet = pd.read_csv(
        tmp_path / "results" / "demo" / "samples.tsv", sep="\t", dtype={"slide_id": str}
    )
    assert dict(zip(folds.slide_id, folds.y, strict=True)) == dict(
        zip(sheet.slide_id, sheet.label, strict=True)
    )
    assert (folds.split == "test").sum() == 2 and set(folds.fold[folds.split == "train"]) == {0, 1}

    table = pd.read_csv(res / "predictions.tsv", sep="\t", dtype={"bag_id": str})
    probs = table[["prob_0", "prob_1", "prob_2"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    test = table[table.split == "test"]
    assert sorted(test.bag_id) == sorted(folds.slide_id[folds.split == "test"])
    assert test.fold_agreement.between(0, 1).all() and (test.scored_by == "ensemble").all()
    oof = table[table.split == "train"]
    assert sorted(oof.bag_id) == sorted(folds.slide_id[folds.split == "train"])
    assert all(
        f"fold_{f}" == s
        for f, s in zip(folds.set_index("slide_id").fold[oof.bag_id], oof.scored_by, strict=True)
    )

    metrics = json.loads((res / "metrics.json").read_text())
    for key in ("auc", "balanced_accuracy", "qwk", "oof_auc", "oof_balanced_accuracy", "oof_qwk"):
        assert key in metrics
    assert np.array(metrics["confusion"]).sum() == 2 and metrics["n_oof_bags"] == 4
    assert metrics["decision"]["priors"] and len(metrics["decision"]["priors"]) == 3

    (folder,) = (tmp_path / "results" / "features").glob("resnet18-*")
    # the default start: the cohort's own encoder, on the MIL split's training patients only
    assert folder.name.startswith("resnet18-ssl-")
    assert not (tmp_path / "results" / "splits").exists()  # no box split, no annotation file
    encoder = torch.load(tmp_path / "results" / "encoder" / "ssl" / "encoder.pt", weights_only=True)
    train = folds[folds.split == "train"]
    assert encoder["meta"]["slides"] == sorted(train.slide_id)
    assert encoder["meta"]["train_patients"] == sorted(train.patient_id.astype(str).unique())
    chosen = [line for line in proc.stderr.splitlines() if "slide-label features" in line]
    assert chosen and "cohort's own self-supervised encoder" in chosen[0], proc.stderr[-2000:]
    for slide in folds.slide_id:
        feats = read_features(folder / f"{slide}.h5")
        geo = json.loads((res / "attention" / f"{slide}.geojson").read_text())["features"]
        attention = [f["properties"]["measurements"]["attention"] for f in geo]
        assert len(attention) == len(feats) and abs(sum(attention) - 1) < 1e-4  # bag of one slide
        overlay = Image.open(res / "attention" / f"{slide}.png")
        assert overlay.size[0] == 400  # the 256 px thumbnail (8 px a tile), drawn 400 px wide
    for name in ("roc.png", "confusion.png", "top_tiles.png"):
        assert Image.open(res / name).size[0] > 300, name

    client = MlflowClient(f"sqlite:///{tmp_path}/results/mlflow/mlflow.db")
    exp = client.get_experiment_by_name("histodetect").experiment_id
    runs = client.search_runs([exp], "attributes.run_name LIKE 'mil_fold_%'")
    assert sorted(r.info.run_name for r in runs) == ["mil_fold_0", "mil_fold_1"]
    last = [line for line in proc.stdout.splitlines() if line.startswith("histodetect:")][-1]
    assert last.startswith("histodetect: clam_sb over 2 test bags: AUC ")

    snakemake(tmp_path, "mil", "--report", "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "Slide labels (MIL)" in page
    attention = f"{folds.slide_id.iloc[0]}.png"
    for name in ("predictions.tsv", "roc.png", "confusion.png", "top_tiles.png", attention):
        assert name in page, name
    assert "QWK" in last and "out of fold over 4 training bags" in last
    assert "Nothing to be done" in snakemake(tmp_path, "mil").stderr


def test_predict_calls_new_slides_with_the_mil_models_and_leaves_out_a_broken_one(
    mil_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    workdir, _ = mil_run
    res = workdir / "results"
    folds = pd.read_csv(res / "mil" / "folds.tsv", sep="\t", dtype={"slide_id": str})
    test = sorted(folds.slide_id[folds.split == "test"])
    # The run's two test slides again under new ids (no label), and a file that is no slide.
    sheet = pd.DataFrame(
        {
            "slide_id": [f"N{s}" for s in test],
            "path": [f"results/demo/slides/{s}.tiff" for s in test],
        }
    )
    (workdir / "broken.tiff").write_bytes(b"not a slide")
    sheet.loc[len(sheet)] = ["Nbad", "broken.tiff"]
    sheet.to_csv(workdir / "new.tsv", sep="\t", index=False)
    proc = snakemake(workdir, "predict", "--config", "predict={samples: new.tsv}")
    out = res / "predict" / "mil"
    table = pd.read_csv(out / "predictions.tsv", sep="\t", dtype={"bag_id": str})
    assert sorted(table.bag_id) == [f"N{s}" for s in test]  # the broken slide is left out
    run = pd.read_csv(res / "mil" / "predictions.tsv", sep="\t", dtype={"bag_id": str})
    run = run.set_index("bag_id").loc[test]  # the ensemble's answer on the same images
    probs = ["prob_0", "prob_1", "prob_2"]
    np.testing.assert_allclose(table[probs].to_numpy(), run[probs].to_numpy(), atol=1e-4)
    assert table.call.tolist() == run.call.tolist()
    assert table.fold_agreement.tolist() == run.fold_agreement.tolist()
    decision = json.loads((res / "mil" / "decision.json").read_text())
    assert (
        decision["decision"] == json.loads((res / "mil" / "metrics.json").read_text())["decision"]
    )
    (folder,) = (res / "predict" / "features").glob("resnet18-*")
    assert folder.name == decision["encoder_id"]
    for slide in test:
        geo = json.loads((out / "attention" / f"N{slide}.geojson").read_text())["features"]
        mine = [f["properties"]["measurements"]["attention"] for f in geo]
        theirs = json.loads((res / "mil" / "attention" / f"{slide}.geojson").read_text())
        theirs = [f["properties"]["measurements"]["attention"] for f in theirs["features"]]
        np.testing.assert_allclose(mine, theirs, atol=1e-5)
        assert (out / "attention" / f"N{slide}.png").stat().st_size > 0
    assert not list(out.glob("attention/Nbad.*"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("histodetect:")]
    assert any(line.startswith("histodetect: new slide Nbad left out: tiling: ") for line in lines)
    assert lines[-1].startswith(f"histodetect: 2 new bags called in {out.relative_to(workdir)}")

    # An earlier run's results/mil folder as predict.models; refused for other features.
    old = workdir / "old_mil"
    for path in [*(res / "mil").glob("fold_*/model.pt"), res / "mil" / "decision.json"]:
        dest = old / path.relative_to(res / "mil")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    shutil.rmtree(out)
    snakemake(workdir, "predict", "--config", "predict={samples: new.tsv, models: old_mil}")
    again = pd.read_csv(out / "predictions.tsv", sep="\t", dtype={"bag_id": str})
    pd.testing.assert_frame_equal(again, table)
    refused = snakemake(
        workdir, "predict", "-n", "--config", "predict={samples: new.tsv, models: old_mil}",
        "ssl={model: resnet34}", check=False,
    )  # fmt: skip
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert f"old_mil/decision.json: the models were trained on features {folder.name}" in said
    assert "but this config extracts resnet34-" in said


def test_topk_fine_tunes_the_cohorts_encoder_from_bag_labels(
    mil_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    workdir = tmp_path / "topk"
    shutil.copytree(mil_run[0], workdir)  # tiles, features and the cohort's encoder as they are
    topk = "mil={model: topk, topk: {epochs: 2, k: 2, score_tiles: 16, batch_size: 8}}"
    proc = snakemake(workdir, "mil", "--config", topk)
    chosen = [line for line in proc.stderr.splitlines() if "slide-label features" in line]
    assert chosen and chosen[0].endswith("mil.model topk fine-tunes it from the bag labels")
    ran = {line.split()[-1] for line in proc.stderr.splitlines() if line.startswith(("rule ", "localrule "))}  # fmt: skip
    assert "train_mil:" in ran and "mil_ensemble:" in ran  # the rule lines were read
    assert "pretrain_encoder:" not in ran and "extract_features:" not in ran  # reused
    res = workdir / "results" / "mil"
    encoder = workdir / "results" / "encoder" / "ssl" / "encoder.pt"
    started = torch.load(encoder, weights_only=True)["state_dict"]
    for fold in (0, 1):
        blob = torch.load(res / f"fold_{fold}" / "model.pt", weights_only=True)
        assert blob["format"] == "histodetect-mil-topk-1" and blob["meta"]["k"] == 2
        assert blob["meta"]["config"]["checkpoint"] == "results/encoder/ssl/encoder.pt"
        tuned = blob["state_dict"]["backbone.conv1.weight"]
        assert tuned.shape == started["conv1.weight"].shape
        assert not torch.equal(tuned, started["conv1.weight"])  # the encoder itself trained
    table = pd.read_csv(res / "predictions.tsv", sep="\t", dtype={"bag_id": str})
    probs = table[["prob_0", "prob_1", "prob_2"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (table.split == "test").sum() == 2 and (table.split == "train").sum() == 4
    folds = pd.read_csv(res / "folds.tsv", sep="\t", dtype={"slide_id": str})
    for slide in folds.slide_id:
        geo = json.loads((res / "attention" / f"{slide}.geojson").read_text())["features"]
        attention = [f["properties"]["measurements"]["attention"] for f in geo]
        assert abs(sum(attention) - 1) < 1e-4 and max(attention) > min(attention)
    last = [line for line in proc.stdout.splitlines() if line.startswith("histodetect:")][-1]
    assert last.startswith("histodetect: topk over 2 test bags: AUC ")

    # new slides: the run's two test slides under new ids, scored from their tiles
    test = sorted(folds.slide_id[folds.split == "test"])
    sheet = pd.DataFrame(
        {
            "slide_id": [f"N{s}" for s in test],
            "path": [f"results/demo/slides/{s}.tiff" for s in test],
        }
    )
    sheet.to_csv(workdir / "new.tsv", sep="\t", index=False)
    snakemake(workdir, "predict", "--config", topk, "predict={samples: new.tsv}")
    new = pd.read_csv(workdir / "results" / "predict" / "mil" / "predictions.tsv", sep="\t")
    run = table.set_index("bag_id").loc[test]
    probs = ["prob_0", "prob_1", "prob_2"]
    np.testing.assert_allclose(new[probs].to_numpy(), run[probs].to_numpy(), atol=1e-4)
    assert new.call.astype(str).tolist() == run.call.astype(str).tolist()
    for s in test:
        assert (workdir / "results" / "predict" / "mil" / "attention" / f"N{s}.png").exists()
