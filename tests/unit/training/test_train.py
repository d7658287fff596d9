"""Fold training: learning, MLflow/TensorBoard logging, checkpoints and resume."""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from _fixtures import colour_slide, tile_table, write_tiff
from mlflow.tracking import MlflowClient
from sklearn.metrics import balanced_accuracy_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from histodetect.fit.data import TileDataset, prepare_batch
from histodetect.fit.model import load_model
from histodetect.fit.tracking import RunLogger
from histodetect.training import train as train_mod
from histodetect.training.train import TrainConfig, train_fold

ROOT = Path(__file__).resolve().parents[3]
FAST = {"backbone": "test_efficientnet", "hidden": 16, "batch_size": 16, "lr": 2e-3}
FAST |= {"num_workers": 0, "colour_jitter": 0.05}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    path, labels = colour_slide(tmp_path_factory.mktemp("slide") / "colour.tiff")
    return tile_table(path, labels)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _train(
    tiles: pd.DataFrame, out: Path, uri: str, *, fold: int = 0, experiment: str = "e", **cfg: Any
) -> dict[str, Any]:
    small = tiles[tiles.row < 4] if fold == 0 else tiles[tiles.row >= 12]
    val = tiles[(tiles.row >= 12) & (tiles.row < 14)] if fold == 0 else tiles[tiles.row < 2]
    config = TrainConfig.from_dict({**FAST, **cfg})
    return train_fold(
        small, val, out, config, fold=fold, run_name=f"fold_{fold}", mlflow_uri=uri,
        experiment=experiment, tb_dir=out / "tb",
    )  # fmt: skip


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(path_a: Path, path_b: Path) -> None:
    """Two saved models hold the same weights (a resumed run against an uninterrupted one)."""
    a, b = _weights(path_a), _weights(path_b)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="'learning_rate'"):
        TrainConfig.from_dict({"epochs": 2, "learning_rate": 0.1})
    with pytest.raises(ValueError, match="scheduler"):
        TrainConfig.from_dict({"scheduler": "step"})
    assert TrainConfig.from_dict({"epochs": 2}).epochs == 2


@pytest.fixture(scope="module")
def two_folds(
    tiles: pd.DataFrame, store: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("folds")
    metrics = [
        _train(tiles, root / f"fold_{k}", store, fold=k, experiment="cv", epochs=3) for k in (0, 1)
    ]
    return root, metrics


def test_learns_colour_task(two_folds: tuple[Path, list[dict[str, Any]]]) -> None:
    root, metrics = two_folds
    for k, m in enumerate(metrics):
        assert m["val_auc"] > 0.9 and m["patch_auc"] > 0.9
        assert json.loads((root / f"fold_{k}" / train_mod.TRAINING_METRICS).read_text()) == m
        at = {f"patch_{k}_at_0.5" for k in ("f1", "precision", "recall", "accuracy")}
        assert set(m) >= at and "patch_f1" not in m  # a decision's metrics say which decision
        _, meta = load_model(root / f"fold_{k}" / "model.pt")
        assert meta["epoch"] == m["best_epoch"] and meta["tile_px"] == 32 and meta["fold"] == k


def test_crop_training_scores_whole_tiles(tiles: pd.DataFrame, store: str, tmp_path: Path) -> None:
    metrics = _train(tiles, tmp_path, store, epochs=3, crop_px=16, experiment="crop")
    assert metrics["patch_auc"] > 0.9  # trained on 16 px crops, validated on 32 px tiles
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["tile_px"] == 32 and meta["config"]["crop_px"] == 16
    with pytest.raises(ValueError, match="crop_px"):
        TrainConfig.from_dict({"crop_px": 4})


def test_mlflow_run_per_fold(two_folds: tuple[Path, list[dict[str, Any]]], store: str) -> None:
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("cv")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["fold_0", "fold_1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["n_train"] == "64" and run.data.params["lr"] == "0.002"
        for key in ("train_loss", "val_loss", "val_auc"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == [0, 1, 2]
        losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert losses[-1] < losses[0]
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.pt"]


def test_tensorboard_scalars(two_folds: tuple[Path, list[dict[str, Any]]]) -> None:
    events = EventAccumulator(str(two_folds[0] / "fold_0" / "tb"))
    events.Reload()
    assert "val_auc" in events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("val_auc")] == [0, 1, 2]


def test_resume_equals_uninterrupted(tiles: pd.DataFrame, store: str, tmp_path: Path) -> None:
    cfg = {"scheduler": "plateau", "experiment": "resume"}
    _train(tiles, tmp_path / "a", store, epochs=3, **cfg)
    _train(tiles, tmp_path / "b", store, epochs=2, **cfg)
    second = _train(tiles, tmp_path / "b", store, epochs=3, **cfg)
    assert second["epochs_run"] == 3
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert len(runs) == 2  # the rerun of "b" continued its run instead of starting afresh
    for name in ("last.pt", "model.pt"):
        a = _weights(tmp_path / "a" / "model.pt") if name == "model.pt" else None
        if a is None:
            a = torch.load(tmp_path / "a" / name, weights_only=False)["model"]
            b = torch.load(tmp_path / "b" / name, weights_only=False)["model"]
        else:
            b = _weights(tmp_path / "b" / name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_resume_after_kill(
    tiles: pd.DataFrame, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _train(tiles, tmp_path / "a", store, epochs=3, experiment="kill")
    real = train_mod._train_epoch

    def dies_in_epoch_2(*args: Any) -> float:
        if args[-1].endswith("epoch 2"):
            raise KeyboardInterrupt  # stands in for SIGKILL after epoch 1's checkpoint
        return real(*args)

    monkeypatch.setattr(train_mod, "_train_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _train(tiles, tmp_path / "b", store, epochs=3, experiment="kill")
    assert not (tmp_path / "b" / train_mod.TRAINING_METRICS).exists()
    monkeypatch.setattr(train_mod, "_train_epoch", real)
    resumed = _train(tiles, tmp_path / "b", store, epochs=3, experiment="kill")
    for timing in ("train_img_s", "data_wait"):  # measured, so not reproducible
        assert resumed.pop(timing) > 0 and reference.pop(timing) > 0
    assert resumed == pytest.approx(reference, rel=1e-4, nan_ok=True)
    _assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("kill").experiment_id])
    run_b = next(r for r in runs if r.info.run_id != _run_id(tmp_path / "a"))
    assert len(runs) == 2 and run_b.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_b.info.run_id, "val_loss")]
    assert sorted(steps) == [0, 1, 2]


def _run_id(out: Path) -> str:
    return torch.load(out / "last.pt", weights_only=False)["run_id"]


def test_early_stopping(tiles: pd.DataFrame, store: str, tmp_path: Path) -> None:
    metrics = _train(
        tiles, tmp_path, store, epochs=10, lr=0.0, early_stopping_patience=2, experiment="es"
    )
    assert metrics["epochs_run"] < 10  # stopped exactly `patience` epochs after the best one
    assert metrics["epochs_run"] - 1 - metrics["best_epoch"] == 2
    assert np.isfinite(metrics["val_loss"])


def test_train_fold_script(
    tiles: pd.DataFrame, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # the script redirects these
    monkeypatch.setattr(logging.root, "handlers", [])
    tiles[tiles.row < 2].to_parquet(tmp_path / "train.parquet")
    tiles[tiles.row >= 14].to_parquet(tmp_path / "val.parquet")
    out = tmp_path / "models" / "fold_3"
    snakemake = SimpleNamespace(
        input=SimpleNamespace(train=str(tmp_path / "train.parquet"), val=str(tmp_path / "val.parquet")),
        output=SimpleNamespace(model=str(out / "model.pt"), metrics=str(out / "training_metrics.json")),
        params=SimpleNamespace(
            train={**FAST, "epochs": 1}, fold=3, mlflow_uri=store, experiment="script",
            tb_dir=str(tmp_path / "tb" / "fold_3"),
        ),
        log=[str(tmp_path / "train.log")],
        threads=torch.get_num_threads(),
    )  # fmt: skip
    runpy.run_path(str(ROOT / "workflow/scripts/train_fold.py"), {"snakemake": snakemake})
    assert json.loads((out / "training_metrics.json").read_text())["epochs_run"] == 1
    assert load_model(out / "model.pt")[1]["fold"] == 3
    assert "fold 3 epoch 0" in (tmp_path / "train.log").read_text()


@pytest.fixture(scope="module")
def three_class_tiles(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Tiles of a slide painted noisy red, green or blue (classes a, b, c)."""
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 3, (16, 16))
    colours = np.array([(200, 30, 40), (40, 180, 60), (40, 60, 190)])[classes]
    image = np.repeat(np.repeat(colours, 64, 0), 64, 1) + rng.integers(-25, 26, (1024, 1024, 3))
    path = write_tiff(
        tmp_path_factory.mktemp("rgb") / "rgb.tiff", image.clip(0, 255).astype(np.uint8)
    )
    table = tile_table(path, classes)
    return table.assign(class_name=np.array(["a", "b", "c"])[table.label])


def test_multiclass_cross_entropy(
    three_class_tiles: pd.DataFrame, store: str, tmp_path: Path
) -> None:
    tiles = three_class_tiles
    m = _train(tiles, tmp_path, store, epochs=3, experiment="multi", loss="bce")
    assert m["val_auc"] > 0.9
    for name in ("a", "b", "c"):
        assert 0 <= m[f"patch_recall_{name}_at_argmax"] <= 1 and m[f"patch_auc_{name}"] > 0.9
    model, meta = load_model(tmp_path / "model.pt")
    assert meta["classes"] == ["a", "b", "c"] and meta["loss"] == "ce"
    val = tiles[(tiles.row >= 12) & (tiles.row < 14)].reset_index(drop=True)
    images = torch.stack([TileDataset(val)[i][0] for i in range(len(val))])
    with torch.inference_mode():
        pred = model(prepare_batch(images, torch.device("cpu"))).argmax(1).numpy()
    expected = balanced_accuracy_score(val.label, pred)
    assert m["patch_balanced_accuracy_at_argmax"] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="focal loss is binary"):
        _train(tiles, tmp_path / "f", store, epochs=1, experiment="multi", loss="focal")


def _record_loader_weights(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``weights`` every loader of training is made with, in order (None: unweighted)."""
    seen: list[Any] = []
    real = train_mod.make_loader

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("weights"))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "make_loader", recording)
    return seen


def test_weight_column_resumes_identically(
    tiles: pd.DataFrame, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weighted = tiles.assign(weight=np.where(tiles.label == 1, 1.0, 0.25))
    seen = _record_loader_weights(monkeypatch)
    cfg = {"experiment": "weighted", "scheduler": "plateau"}
    _train(weighted, tmp_path / "a", store, epochs=2, **cfg)
    train_rows = weighted[weighted.row < 4]
    np.testing.assert_array_equal(seen[0], train_rows.weight)  # training loader: weighted
    assert seen[1] is None  # validation loader: every tile once
    _train(weighted, tmp_path / "b", store, epochs=1, **cfg)
    _train(weighted, tmp_path / "b", store, epochs=2, **cfg)
    _assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")


def test_default_workers_leave_a_core() -> None:
    assert TrainConfig(num_workers=3).workers() == 3
    cores = len(os.sched_getaffinity(0))
    assert TrainConfig().workers() == min(4, cores - 1)


def test_regularised_training_resumes_identically(
    three_class_tiles: pd.DataFrame, store: str, tmp_path: Path
) -> None:
    """Mixup, label smoothing and the weight EMA learn the task and survive a restart."""
    cfg = {"experiment": "regularised", "loss": "ce", "mixup_alpha": 0.4}
    cfg |= {"label_smoothing": 0.1, "ema_decay": 0.9, "select": "last"}
    m = _train(three_class_tiles, tmp_path / "a", store, epochs=3, **cfg)
    assert m["patch_auc"] > 0.9 and m["selected_epoch"] == 2
    model_a, meta = load_model(tmp_path / "a" / "model.pt")
    assert meta["epoch"] == 2 and meta["config"]["ema_decay"] == 0.9
    final = MlflowClient(store).get_metric_history(_run_id(tmp_path / "a"), "final_val_auc")
    assert [f.step for f in final] == [2]  # logged at the saved (last) epoch
    last = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    assert last["ema"]["updates"] == 3 * 4  # 64 tiles in batches of 16, 3 epochs
    saved = model_a.state_dict()
    for key, raw in last["model"].items():  # model.pt holds the average, not the raw weights
        if raw.dtype.is_floating_point and raw.ndim > 1:
            assert not torch.allclose(saved[key], raw)
    _train(three_class_tiles, tmp_path / "b", store, epochs=2, **cfg)
    _train(three_class_tiles, tmp_path / "b", store, epochs=3, **cfg)
    _assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")


def test_label_smoothing_softens_targets() -> None:
    logits, y = torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([0])
    task = train_mod.Task(["a", "b", "c"], "ce")
    soft = torch.tensor([[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]])
    expected = -(soft * torch.log_softmax(logits, 1)).sum()
    got = task.loss_of(torch.nn.CrossEntropyLoss(), logits, y, smoothing=0.1)
    torch.testing.assert_close(got, expected)
    binary = train_mod.Task(["0", "1"], "bce")
    got = binary.loss_of(torch.nn.BCEWithLogitsLoss(), logits[:, :1], y + 1, smoothing=0.2)
    torch.testing.assert_close(got, torch.nn.functional.softplus(torch.tensor(2.0)) - 0.9 * 2.0)
    for bad in ({"label_smoothing": 1.0}, {"mixup_alpha": -1}, {"ema_decay": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig.from_dict(bad)
    with pytest.raises(ValueError, match="select"):
        TrainConfig.from_dict({"select": "median"})


def test_final_metrics_are_logged_at_the_saved_epoch(store: str, tmp_path: Path) -> None:
    logger = RunLogger(store, "final-step", "fold_0", tmp_path / "tb")
    run_id = logger.start(None, {"lr": 0.1}, [])
    (tmp_path / "model.pt").write_bytes(b"weights")
    logger.finish({"best_epoch": 1, "selected_epoch": 4, "val_auc": 0.9}, tmp_path / "model.pt")
    final = MlflowClient(store).get_metric_history(run_id, "final_val_auc")
    assert [(f.step, f.value) for f in final] == [(4, 0.9)]  # select: last, best was epoch 1


@pytest.mark.parametrize("balance", ["sampler", "loss"])
def test_class_balanced_run_resumes_identically(
    tiles: pd.DataFrame, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, balance: str
) -> None:
    """Balancing comes from the training rows alone and survives a restart unchanged."""
    seen = _record_loader_weights(monkeypatch)
    cfg = {"experiment": f"balance-{balance}", "scheduler": "plateau", "class_balance": balance}
    _train(tiles, tmp_path / "a", store, epochs=2, **cfg)
    n = np.bincount(tiles[tiles.row < 4].label, minlength=2)  # the training rows, not val
    _, meta = load_model(tmp_path / "a" / "model.pt")
    assert meta["class_balance"] == balance and meta["train_class_counts"] == list(n)
    if balance == "sampler":
        labels = tiles[tiles.row < 4].label.to_numpy()
        for c in (0, 1):  # each class draws half of an epoch of the same length
            assert seen[0][labels == c].sum() == pytest.approx(len(labels) / 2)
        assert meta["loss_weights"] == {}
    else:
        assert seen[0] is None and meta["loss_weights"] == {"pos_weight": n[0] / n[1]}
    assert seen[1] is None  # validation: every tile once
    _train(tiles, tmp_path / "b", store, epochs=1, **cfg)
    _train(tiles, tmp_path / "b", store, epochs=2, **cfg)
    for first, resumed in zip(seen[:2], seen[-2:], strict=True):
        np.testing.assert_array_equal(first, resumed)
    assert load_model(tmp_path / "b" / "model.pt")[1]["loss_weights"] == meta["loss_weights"]
    _assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    with pytest.raises(ValueError, match="class_balance"):
        TrainConfig.from_dict({"class_balance": "oversample"})


def test_validation_predictions_are_written(
    two_folds: tuple[Path, list[dict[str, Any]]], tiles: pd.DataFrame
) -> None:
    root, metrics = two_folds
    pred = pd.read_parquet(root / "fold_0" / train_mod.PREDICTIONS)
    val = tiles[(tiles.row >= 12) & (tiles.row < 14)].reset_index(drop=True)
    assert len(pred) == len(val) and set(pred.fold) == {0}
    np.testing.assert_array_equal(pred.label, val.label)
    assert {"slide_id", "x", "y", "prob"} <= set(pred.columns)
    assert balanced_accuracy_score(pred.label, pred.prob >= 0.5) == pytest.approx(
        metrics[0]["patch_balanced_accuracy_at_0.5"]
    )
