"""`snakemake features` on the small run: the cohort's own encoder, then every slide's h5."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _workflow import planned_jobs, snakemake
from mlflow.tracking import MlflowClient

from histodetect.features.extract import with_context
from histodetect.features.store import read_features

pytestmark = pytest.mark.integration

SSL = {"epochs": 1, "max_tiles": 96, "batch_size": 16, "num_workers": 0}


def _configure(workdir: Path, features: dict, ssl: dict | None = None, train: dict | None = None):
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["features"] = {**config["features"], **features}
    config["ssl"] = {**config["ssl"], **(ssl or {})}
    config["train"] = {**config["train"], **(train or {})}
    path.write_text(yaml.safe_dump(config))


def test_features_from_the_cohorts_own_encoder(run_copy: Path) -> None:
    plain = {"source": "ssl", "batch_size": 64, "num_workers": 0, "context": "none"}
    _configure(run_copy, plain, SSL)
    snakemake(run_copy, "features")
    res = run_copy / "results"
    split = pd.read_csv(res / "splits" / "split.tsv", sep="\t", dtype=str)
    encoder = torch.load(res / "encoder" / "ssl" / "encoder.pt", weights_only=True)
    train = split[split.split == "train"]
    assert encoder["meta"]["slides"] == sorted(train.slide_id)  # never a test patient's tiles
    assert encoder["meta"]["train_patients"] == sorted(train.patient_id.unique())
    (folder,) = [p for p in (res / "features").iterdir() if p.is_dir()]
    assert folder.name.startswith("resnet18-ssl-")
    summary = pd.read_csv(folder / "summary.tsv", sep="\t", dtype={"slide_id": str})
    assert sorted(summary.slide_id) == sorted(split.slide_id) and set(summary.status) == {"ok"}
    for row in summary.itertuples():
        tiles = pd.read_parquet(res / "tiles" / f"{row.slide_id}.parquet")
        data = read_features(folder / f"{row.slide_id}.h5", {"encoder_id": folder.name})
        assert data.features.shape == (len(tiles), 512) == (row.n_tiles, row.dim)
        np.testing.assert_array_equal(data.coords, tiles[["x", "y"]].to_numpy())
        assert np.isfinite(data.features.astype(np.float32)).all()
        assert data.attrs["encoder_source"] == "ssl" and data.attrs["tile_um"] == 128.0
    client = MlflowClient(f"sqlite:///{res}/mlflow/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("histodetect").experiment_id],
        "attributes.run_name = 'ssl_encoder'",
    )
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert list((res / "tensorboard" / "ssl_encoder").glob("events.out.tfevents.*"))
    assert "Nothing to be done" in snakemake(run_copy, "features").stderr

    # With context: the same encoder's features beside their neighbours' mean, a new folder.
    _configure(run_copy, {"context": "neighbours"})
    assert "pretrain_encoder" not in snakemake(run_copy, "features").stderr
    (ctx,) = [p for p in (res / "features").iterdir() if p.is_dir() and p != folder]
    assert ctx.name.startswith("resnet18-ssl-")
    slide = str(summary.slide_id.iloc[0])
    plain = read_features(folder / f"{slide}.h5").features.astype(np.float32)
    data = read_features(ctx / f"{slide}.h5", {"encoder_id": ctx.name, "context": "neighbours"})
    assert data.features.shape == (len(plain), 1024)
    np.testing.assert_allclose(data.features[:, :512], plain, atol=1e-2)
    expected = with_context(plain, data.grid["row"], data.grid["col"])[:, 512:]
    np.testing.assert_allclose(data.features[:, 512:], expected, atol=2e-2)
    _configure(run_copy, {"context": "none"})  # the rest of the test: the plain folder

    # The fold models can start from it; a larger tile makes a new feature folder.
    _configure(run_copy, {}, None, {"init": "ssl"})
    jobs = planned_jobs(snakemake(run_copy, "-n", "results/models/fold_0/model.pt").stdout)
    assert jobs.get("train_fold") == 1 and "pretrain_encoder" not in jobs
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    config["tiling"]["tile_um"] = 192.0
    (run_copy / "config.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(run_copy, "-n", "features").stdout
    assert folder.name not in dry and "results/features/resnet18-ssl-" in dry


def test_an_imported_trident_folder_and_a_missing_slide(run_copy: Path) -> None:
    slides = pd.read_csv(run_copy / "results" / "splits" / "split.tsv", sep="\t", dtype=str)
    folder = run_copy / "trident"
    folder.mkdir()
    for k, slide in enumerate(sorted(slides.slide_id)):
        with h5py.File(folder / f"{slide}.h5", "w") as h5:
            h5["features"] = np.full((3 + k, 16), k, np.float32)
            h5["coords"] = np.arange(2 * (3 + k)).reshape(-1, 2) * 224
            h5["coords"].attrs["patch_size_level0"] = 224
    _configure(run_copy, {"source": "import", "import_dir": str(folder)})
    snakemake(run_copy, "features")
    (out,) = [p for p in (run_copy / "results" / "features").iterdir() if p.is_dir()]
    first = read_features(out / f"{sorted(slides.slide_id)[1]}.h5")
    assert first.features.shape == (4, 16) and first.features.dtype == np.float16
    assert json.loads(first.attrs["source_attrs"])["coords"]["patch_size_level0"] == 224
    shutil.rmtree(out)
    (folder / f"{sorted(slides.slide_id)[0]}.h5").unlink()
    proc = snakemake(run_copy, "features", check=False)
    assert proc.returncode != 0
    line = f"{folder}: no feature file for 1 slide(s) of the sheet: {sorted(slides.slide_id)[0]}"
    assert line in proc.stdout + proc.stderr
