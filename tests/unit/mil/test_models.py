"""Bag models: attention finds the one tile that decides a bag, where mean pooling cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from histodetect.features.store import SlideFeatures, write_features
from histodetect.mil.data import FeatureSource, bags_of
from histodetect.mil.models import MilTask, load_mil_model, score_bag
from histodetect.mil.train import MilConfig, auc_of, train_fold


def _bags(folder: Path, n: int, rng: np.random.Generator, prefix: str) -> pd.DataFrame:
    """Bags of 30-100 tiles around a bag-wide random offset; a positive bag has one tile
    whose first feature is 8 higher: its mean moves by 8 / size, less than the offsets do."""
    rows = []
    for i in range(n):
        y, size = i % 2, int(rng.integers(30, 100))
        x = rng.normal(0, 1, (size, 8)) + rng.normal(0, 0.5, 8)
        if y:
            x[int(rng.integers(size)), 0] += 8.0
        sid = f"{prefix}{i:03d}"
        coords = np.zeros((size, 2), np.int64)
        write_features(folder / f"{sid}.h5", SlideFeatures(x, coords, {"status": "ok"}))
        rows.append((sid, f"P{sid}", sid, f"P{sid}", str(y), y))
    return pd.DataFrame(rows, columns=["slide_id", "patient_id", "bag_id", "group", "label", "y"])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("bags")
    rng = np.random.default_rng(0)
    train = _bags(folder, 100, rng, "T").assign(split="train")
    train["fold"] = np.where(np.arange(len(train)) % 5 == 0, 0, 1)  # fold 0 validates
    test = _bags(folder, 60, rng, "X").assign(split="test", fold=-1)
    return folder, train, test


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"  # one engine per URI


def _train_one_fold(
    kind: str, train: pd.DataFrame, source: FeatureSource, store: str, out: Path
) -> tuple:
    """Fold 0 of ``train`` with a small ``kind`` bag model (one thread, seed 0), loaded back."""
    torch.set_num_threads(1)
    cfg = MilConfig(model=kind, hidden=32, dropout=0.0, epochs=20, lr=1e-3, seed=0)
    train_fold(
        train, 0, source, out, cfg, ["0", "1"], mlflow_uri=store,
        experiment="t", tb_dir=out / "tb",
    )  # fmt: skip
    return load_mil_model(out / "model.pt")


@pytest.mark.parametrize(("kind", "lo", "hi"), [("abmil", 0.97, 1.0), ("mean", 0.0, 0.75)])
def test_attention_learns_the_deciding_tile_and_mean_pooling_does_not(
    cohort: tuple[Path, pd.DataFrame, pd.DataFrame],
    store: str,
    tmp_path: Path,
    kind: str,
    lo: float,
    hi: float,
) -> None:
    folder, train, test = cohort
    source = FeatureSource(folder)
    model, task, meta = _train_one_fold(kind, train, source, store, tmp_path)
    assert meta["train_patients"] == sorted(train.group[train.fold == 1])
    probs = np.array([score_bag(model, task, x)[0] for _, x in source.stream(bags_of(test))])
    auc = auc_of(test.y.to_numpy(), probs)
    assert lo <= auc <= hi, f"{kind}: test AUC {auc:.3f}"


def test_transformer_learns_the_deciding_tile_and_its_class_token_attends_to_it(
    cohort: tuple[Path, pd.DataFrame, pd.DataFrame], store: str, tmp_path: Path
) -> None:
    folder, train, test = cohort
    source = FeatureSource(folder)
    model, task, meta = _train_one_fold("transformer", train, source, store, tmp_path)
    assert meta["arch"]["kind"] == "transformer" and meta["arch"]["layers"] == 2
    scored = [(score_bag(model, task, x), x) for _, x in source.stream(bags_of(test))]
    probs = np.array([p for (p, _), _ in scored])
    auc = auc_of(test.y.to_numpy(), probs)
    assert auc >= 0.95, f"transformer: test AUC {auc:.3f}"
    for (_, weights), x in scored:
        assert weights.shape == (len(x),) and abs(weights.sum() - 1) < 1e-5
    # in positive bags, the deciding tile (first feature 8 higher) is among the most attended
    hits = [
        int(x[:, 0].argmax()) in np.argsort(-w)[:3]
        for ((_, w), x), y in zip(scored, test.y, strict=True)
        if y == 1
    ]
    assert np.mean(hits) >= 0.8, f"deciding tile in the top 3 of {np.mean(hits):.2f} of bags"


def test_ordinal_probabilities_are_a_distribution_and_the_loss_respects_order() -> None:
    task = MilTask("ordinal", ["0", "1", "2", "3"])
    logits = torch.tensor([[3.0, 0.0, -3.0]])  # P(y > k) = 0.95, 0.5, 0.05
    probs = task.probs(logits)
    assert torch.allclose(probs.sum(1), torch.ones(1))
    assert probs.argmax().item() in (1, 2)
    losses = [task.loss(logits, torch.tensor([y])).item() for y in range(4)]
    assert losses[3] > losses[2] and losses[0] > losses[1]  # far grades cost more
