"""Top-k instance MIL (``mil.model: topk``): the tile encoder trained from bag labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_concat import _bag, _train_test_folds

from histodetect.mil.ensemble import ensemble
from histodetect.mil.models import MilTask
from histodetect.mil.summary_image import TileSource
from histodetect.mil.train import train_fold
from histodetect.mil.train_concat import SummaryImageNet
from histodetect.mil.train_topk import (
    TopkConfig,
    TopkScorer,
    load_topk_model,
    tile_score,
    top_mean,
)


def test_tile_score_and_the_top_k_mean() -> None:
    binary = MilTask("binary", ["0", "1"])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    np.testing.assert_allclose(tile_score(probs, binary), [0.1, 0.8, 0.4, 0.7])
    np.testing.assert_allclose(top_mean(probs, binary, 2), [0.25, 0.75])
    ordinal = MilTask("ordinal", ["0", "1", "2"])
    grades = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(tile_score(grades, ordinal), [0.0, 1.0, 0.5])


def test_options_come_from_the_mil_section_its_topk_part_and_the_encoder() -> None:
    mil = {"task": "ordinal", "dropout": 0.1, "epochs": 30, "topk": {"k": 3, "epochs": 5}}
    cfg = TopkConfig.from_section(mil, 7, {"backbone": "resnet10t", "checkpoint": "e.pt"})
    assert (cfg.task, cfg.dropout, cfg.k, cfg.epochs, cfg.seed) == ("ordinal", 0.1, 3, 5, 7)
    assert (cfg.backbone, cfg.checkpoint) == ("resnet10t", "e.pt")
    with pytest.raises(ValueError, match="select"):
        TopkConfig(select="best")
    with pytest.raises(ValueError, match="score_tiles >= k"):
        TopkConfig(k=8, score_tiles=4)


def test_a_tiny_top_k_model_finds_the_one_deciding_tile_of_each_bag(tmp_path) -> None:
    torch.set_num_threads(1)
    folds = _train_test_folds(tmp_path, np.random.default_rng(0))
    cfg = TopkConfig(k=1, score_tiles=4, backbone="resnet10t", batch_size=8, dropout=0.0,
                     epochs=8, lr=3e-3, early_stopping_patience=0, seed=0)  # fmt: skip
    source, out = TileSource(tmp_path), tmp_path / "fold_0"
    metrics = train_fold(
        folds, 0, source, out, cfg, ["0", "1"], mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}",
        experiment="t", tb_dir=tmp_path / "tb",
    )  # fmt: skip
    assert metrics["val_auc"] >= 0.95
    val = pd.read_parquet(out / "val_predictions.parquet")
    assert len(val) == 8 and val.prob[val.label == 1].min() > val.prob[val.label == 0].max()
    _, _, meta = load_topk_model(out / "model.pt")
    assert meta["arch"]["kind"] == "topk" and meta["k"] == 1 and meta["select"] == "top"
    scorer = TopkScorer([out / "model.pt"], source)
    table, scored = ensemble(
        folds, [out / "model.pt"], [out / "val_predictions.parquet"], None,  # type: ignore[arg-type]
        n_bootstrap=0, scorer=scorer,
    )  # fmt: skip
    tested = table[table.split == "test"]
    assert len(tested) == 12 and (tested.n_tiles == 4).all() and scored["auc"] >= 0.95
    on_red = []
    for sid in folds.slide_id[(folds.split == "test") & (folds.y == 1)]:
        tiles = source.read(_bag(sid), range(4))
        red = int(np.argmax(tiles[:, 0, 0, 0].astype(int) - tiles[:, 0, 0, 1]))
        weights = scorer.weights(_bag(sid))
        assert abs(weights.sum() - 1) < 1e-9
        on_red.append(weights[red])
    assert np.mean(on_red) > 0.5, on_red  # an even share would be 0.25
    torch.manual_seed(0)
    untrained = SummaryImageNet("resnet10t", 1, ordinal=False, dropout=0.0, kind="topk")
    assert untrained.arch["kind"] == "topk"


def test_random_selection_is_the_naive_tile_model_and_answers_with_every_tile(tmp_path) -> None:
    torch.set_num_threads(1)
    folds = _train_test_folds(tmp_path, np.random.default_rng(1))
    cfg = TopkConfig(k=2, select="random", backbone="resnet10t", batch_size=8, epochs=2,
                     early_stopping_patience=0, seed=0)  # fmt: skip
    out = tmp_path / "fold_1"
    train_fold(
        folds, 1, TileSource(tmp_path), out, cfg, ["0", "1"],
        mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="t", tb_dir=tmp_path / "tb",
    )  # fmt: skip
    scorer = TopkScorer([out / "model.pt"], TileSource(tmp_path))
    bag = _bag(str(folds.slide_id.iloc[0]))
    probs = scorer.tile_probs(bag)[0]
    answer, n = scorer.score(bag)
    assert n == 4
    np.testing.assert_allclose(answer[0], probs.mean(0), atol=1e-6)  # every tile, not the top 2


def test_the_schema_names_every_family_and_topk_option_the_code_knows() -> None:
    import dataclasses
    from pathlib import Path

    import yaml

    from histodetect.features.settings import SOURCES
    from histodetect.mil.models import MODELS

    schema = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
    props = yaml.safe_load(schema.read_text())["properties"]
    mil = props["mil"]["properties"]
    assert set(mil["model"]["enum"]) == {*MODELS, "concat", "topk"}
    assert set(props["features"]["properties"]["source"]["enum"]) == {*SOURCES, "auto"}
    fields = {f.name for f in dataclasses.fields(TopkConfig)}
    assert set(mil["topk"]["properties"]) <= fields
    defaults = {k: v["default"] for k, v in mil["topk"]["properties"].items()}
    cfg = TopkConfig.from_section({"topk": defaults}, 0)
    assert all(getattr(cfg, k) == v for k, v in defaults.items())
