"""The summary-image model (``mil.model: concat``): grid layout, voting, and a tiny training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from histodetect.config.validation import check_config
from histodetect.errors import InputError
from histodetect.mil.data import Bag
from histodetect.mil.ensemble import ensemble
from histodetect.mil.models import MilTask
from histodetect.mil.summary_image import TileSource, assemble, choose_tiles, d4, draw_images
from histodetect.mil.train import train_fold
from histodetect.mil.train_concat import (
    ConcatConfig,
    ConcatScorer,
    SummaryImageNet,
    draw_probs,
    draw_set,
    load_concat_model,
    occlusion_weights,
    vote,
)

PX = 8  # tile side in the hand-made slides


def _slide(folder: Path, sid: str, colours: list[tuple[int, int, int]]) -> None:
    """A one-row slide of ``PX`` px tiles of the given colours, with its tile table."""
    pixels = np.concatenate([np.full((PX, PX, 3), c, np.uint8) for c in colours], 1)
    Image.fromarray(pixels).save(folder / f"{sid}.png")
    n = len(colours)
    table = pd.DataFrame({"x": np.arange(n) * PX, "y": 0, "level": 0, "read_px": PX})
    table.assign(tile_px=PX).to_parquet(folder / f"{sid}.parquet")
    summary = {"slide_id": sid, "path": str(folder / f"{sid}.png")}
    (folder / f"{sid}.json").write_text(json.dumps(summary))


def _bag(sid: str, y: int = 0, fold: int = 0, split: str = "train") -> Bag:
    return Bag(sid, f"P{sid}", y, split, fold, (sid,))


def test_summary_image_puts_tile_i_at_grid_cell_i(tmp_path: Path) -> None:
    colours = [(10 * i, 200 - 10 * i, 5 * i) for i in range(5)]
    _slide(tmp_path, "S", colours)
    source = TileSource(tmp_path)
    chosen = np.array([3, 0, 4, 1, 2])
    image = assemble(source.read(_bag("S"), chosen), k=9)
    assert image.shape == (3 * PX, 3 * PX, 3)  # a 3 x 3 grid holds 9 tiles
    for cell in range(9):
        r, c = divmod(cell, 3)
        block = image[r * PX : (r + 1) * PX, c * PX : (c + 1) * PX].reshape(-1, 3)
        want = colours[chosen[cell]] if cell < 5 else (255, 255, 255)
        assert (block == want).all(), cell
    with pytest.raises(ValueError, match="5 tiles for a grid of 4"):
        assemble(source.read(_bag("S"), chosen), k=4)


def test_draws_are_deterministic_with_the_seed_and_d4_keeps_each_tile(tmp_path: Path) -> None:
    rng0 = np.random.default_rng(0)
    _slide(tmp_path, "S", [tuple(int(v) for v in rng0.integers(0, 255, 3)) for _ in range(20)])
    bag = _bag("S")

    def draw(seed: int) -> tuple[np.ndarray, np.ndarray]:
        return draw_images(TileSource(tmp_path), bag, 4, "random", np.random.default_rng(seed),
                           augment=True)  # fmt: skip

    (a, ia), (b, ib), (_, ic) = draw(1), draw(1), draw(2)
    assert (a == b).all() and (ia == ib).all()
    assert not (ia == ic).all()
    assert len(set(ia.tolist())) == 4 and a.shape == (2 * PX, 2 * PX, 3)
    tile = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    variants = {d4(tile, code).tobytes() for code in range(8)}
    assert len(variants) == 8  # the eight symmetries of the square differ on a generic tile


def test_detection_score_takes_the_top_k_tiles_in_random_order() -> None:
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.2])
    picks = [choose_tiles(5, 2, "detection", scores, np.random.default_rng(s)) for s in range(8)]
    assert all(sorted(p.tolist()) == [1, 3] for p in picks)
    assert {tuple(p) for p in picks} == {(1, 3), (3, 1)}
    assert sorted(choose_tiles(3, 16, "random", None, np.random.default_rng(0))) == [0, 1, 2]


def test_detection_scores_join_the_tiles_by_position_and_pick_the_top_k(tmp_path: Path) -> None:
    _slide(tmp_path, "S", [(10 * i, 0, 0) for i in range(6)])
    scores = tmp_path / "scores"
    scores.mkdir()
    prob = [0.1, 0.7, 0.2, 0.9, 0.3, 0.0]
    table = pd.DataFrame({"x": np.arange(6) * PX, "y": 0, "prob": prob})
    table.iloc[::-1].to_parquet(scores / "S.parquet")  # another row order than the tiles
    source = TileSource(tmp_path, scores)
    assert source.scores(_bag("S")).tolist() == prob
    image, chosen = draw_images(source, _bag("S"), 2, "detection", np.random.default_rng(0),
                                augment=False)  # fmt: skip
    assert sorted(chosen.tolist()) == [1, 3]
    assert image[0, 0, 0] == 10 * chosen[0] and image[0, PX, 0] == 10 * chosen[1]
    table.iloc[1:].to_parquet(scores / "S.parquet")
    with pytest.raises(InputError, match=r"S\.parquet: 1 tiles of S have no score"):
        TileSource(tmp_path, scores).table(_bag("S"))


def test_voting_is_the_mean_of_the_draws(tmp_path: Path) -> None:
    rng0 = np.random.default_rng(3)
    _slide(tmp_path, "S", [tuple(int(v) for v in rng0.integers(0, 255, 3)) for _ in range(12)])
    torch.manual_seed(0)
    model = SummaryImageNet("resnet10t", 3, ordinal=True, dropout=0.0).eval()
    task, cpu = MilTask("ordinal", ["0", "1", "2", "3"]), torch.device("cpu")
    images, chosen = draw_set(TileSource(tmp_path), _bag("S"), 4, "random", draws=5, seed=7)
    assert images.shape == (5, 2 * PX, 2 * PX, 3) and len(chosen) == 5
    one_by_one = np.concatenate([draw_probs(model, task, images[i : i + 1], cpu) for i in range(5)])
    voted = vote(model, task, images, cpu)
    np.testing.assert_allclose(voted, one_by_one.mean(0), atol=1e-6)
    np.testing.assert_allclose(voted.sum(), 1.0, atol=1e-6)
    assert np.abs(one_by_one - voted).max() > 1e-4  # the draws differ: the vote is not one
    again, _ = draw_set(TileSource(tmp_path), _bag("S"), 4, "random", draws=5, seed=7)
    assert (again == images).all()  # a bag's draws depend on the seed and the bag alone


def test_attention_score_is_refused_with_one_line() -> None:
    with pytest.raises(InputError, match=r"mil\.concat\.score 'attention'"):
        ConcatConfig.from_section({"model": "concat", "concat": {"score": "attention"}}, 0)
    cfg = ConcatConfig.from_section({"task": "ordinal", "epochs": 3, "concat": {"k": 9}}, 5)
    assert (cfg.task, cfg.epochs, cfg.k, cfg.seed) == ("ordinal", 3, 9, 5)


def _cohort(folder: Path, n: int, prefix: str, rng: np.random.Generator) -> list[tuple]:
    """Slides of 4 grey tiles of random shades; a positive one has one of them red."""
    rows = []
    for i in range(n):
        y = i % 2
        colours = [(int(g), int(g), int(g)) for g in rng.integers(60, 200, 4)]
        if y:
            colours[int(rng.integers(4))] = (220, 30, 30)
        sid = f"{prefix}{i:02d}"
        _slide(folder, sid, colours)
        rows.append((sid, sid, f"P{sid}", y))
    return rows


def _train_test_folds(folder: Path, rng: np.random.Generator) -> pd.DataFrame:
    """24 training bags in folds 0 and 1 and 12 test bags of :func:`_cohort`."""
    columns = ["slide_id", "bag_id", "group", "y"]
    train = pd.DataFrame(_cohort(folder, 24, "T", rng), columns=columns)
    train = train.assign(split="train", fold=np.where(np.arange(24) % 3 == 0, 0, 1))
    test = pd.DataFrame(_cohort(folder, 12, "X", rng), columns=columns)
    folds = pd.concat([train, test.assign(split="test", fold=-1)], ignore_index=True)
    return folds.assign(label=folds.y.astype(str))


def test_a_tiny_summary_image_model_learns_the_deciding_tile_colour(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    folds = _train_test_folds(tmp_path, np.random.default_rng(0))
    test = folds[folds.split == "test"]
    cfg = ConcatConfig(k=4, draws=2, backbone="resnet10t", batch_size=4, dropout=0.0,
                       epochs=6, lr=3e-3, early_stopping_patience=0, seed=0)  # fmt: skip
    source = TileSource(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "fold_0"
    metrics = train_fold(
        folds, 0, source, out, cfg, ["0", "1"], mlflow_uri=store, experiment="t",
        tb_dir=tmp_path / "tb",
    )  # fmt: skip
    assert metrics["val_auc"] >= 0.95
    val = pd.read_parquet(out / "val_predictions.parquet")
    assert len(val) == 8 and set(val.columns) >= {"bag_id", "patient_id", "label", "fold", "prob"}
    assert val.prob[val.label == 1].min() > val.prob[val.label == 0].max()
    gap = val.prob[val.label == 1].mean() - val.prob[val.label == 0].mean()
    torch.manual_seed(0)  # the same network untrained: its probabilities barely differ
    untrained = SummaryImageNet("resnet10t", 1, ordinal=False, dropout=0.0)
    task, cpu = MilTask("binary", ["0", "1"]), torch.device("cpu")
    bags = [_bag(s, y) for s, y in zip(val.bag_id, val.label, strict=True)]
    raw = np.array([vote(untrained, task, draw_set(source, b, 4, "random", 2, 0)[0], cpu)[1]
                    for b in bags])  # fmt: skip
    raw_gap = raw[val.label == 1].mean() - raw[val.label == 0].mean()
    assert gap > 0.4 and abs(raw_gap) < 0.1, (gap, raw_gap)
    table, scored = ensemble(
        folds, [out / "model.pt"], [out / "val_predictions.parquet"], None,  # type: ignore[arg-type]
        n_bootstrap=0, scorer=ConcatScorer([out / "model.pt"], source),
    )  # fmt: skip
    assert scored["model"] == "concat" and scored["n_test_bags"] == 12
    tested = table[table.split == "test"]
    assert len(tested) == 12 and (tested.n_tiles == 4).all() and set(tested.call) <= {"0", "1"}
    assert scored["auc"] >= 0.95
    model, task, meta = load_concat_model(out / "model.pt")
    on_red = []
    for sid in test.slide_id[test.y == 1]:  # the red tile is where the model looked
        tiles = source.read(_bag(sid), range(4))
        red = int(np.argmax(tiles[:, 0, 0, 0].astype(int) - tiles[:, 0, 0, 1]))
        weights = occlusion_weights([(model, task)], source, _bag(sid), meta)
        on_red.append(weights[red])
    assert np.mean(on_red) > 0.5, on_red  # an even share would be 0.25


class _Redness(torch.nn.Module):
    """A stand-in network whose one logit is the image's mean red excess (R - G)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rgb = images.float()
        return ((rgb[..., 0] - rgb[..., 1]).mean((1, 2)) / 10 - 1)[:, None]


def test_occlusion_weights_fall_on_the_tile_that_moves_the_answer(tmp_path: Path) -> None:
    colours = [(100, 100, 100)] * 9
    colours[6] = (250, 0, 0)
    _slide(tmp_path, "S", colours)
    meta = {"k": 4, "score": "random", "draws": 6, "seed": 1}
    task = MilTask("binary", ["0", "1"])
    weights = occlusion_weights([(_Redness(), task)], TileSource(tmp_path), _bag("S"), meta)
    _, chosen = draw_set(TileSource(tmp_path), _bag("S"), 4, "random", 6, 1)
    drawn = np.unique(np.concatenate(chosen))
    assert 6 in drawn and weights.argmax() == 6 and weights[6] > 0.99
    assert abs(weights.sum() - 1) < 1e-9 and (weights[np.setdiff1d(range(9), drawn)] == 0).all()


def test_the_concat_demo_config_is_valid_and_a_wrong_concat_key_is_named() -> None:
    root = Path(__file__).resolve().parents[3]
    schema = root / "workflow" / "schemas" / "config.schema.yaml"
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    demo = yaml.safe_load((root / "config" / "mil_concat_demo.yaml").read_text())
    for key, value in demo.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    check_config(config, schema, "mil_concat_demo.yaml")
    assert config["mil"]["model"] == "concat" and config["mil"]["concat"]["k"] == 16
    config["mil"]["concat"]["draw"] = 3
    with pytest.raises(InputError, match=r"^my\.yaml: .*unknown key mil\.concat\.draw"):
        check_config(config, schema, "my.yaml")


def test_a_stopped_fold_resumes_from_last_pt_with_its_weight_average(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    rows = _cohort(tmp_path, 8, "T", np.random.default_rng(1))
    folds = pd.DataFrame(rows, columns=["slide_id", "bag_id", "group", "y"])
    folds = folds.assign(split="train", fold=np.arange(8) % 2, label=folds.y.astype(str))
    cfg = ConcatConfig(k=4, draws=1, backbone="resnet10t", batch_size=4, epochs=2,
                       ema_decay=0.9, early_stopping_patience=0, seed=0)  # fmt: skip
    out, store = tmp_path / "fold_0", f"sqlite:///{tmp_path / 'mlflow.db'}"
    kwargs = {"mlflow_uri": store, "experiment": "t", "tb_dir": tmp_path / "tb"}
    train_fold(folds, 0, TileSource(tmp_path), out, cfg, ["0", "1"], **kwargs)
    first = torch.load(out / "last.pt", weights_only=False)
    assert first["epoch"] == 1 and first["ema"]["updates"] == 2  # 4 bags: one step an epoch
    longer = dataclasses.replace(cfg, epochs=3)  # epochs may change on resume
    metrics = train_fold(folds, 0, TileSource(tmp_path), out, longer, ["0", "1"], **kwargs)
    resumed = torch.load(out / "last.pt", weights_only=False)
    assert metrics["epochs_run"] == 3 and [h["epoch"] for h in resumed["history"]] == [0, 1, 2]
    assert resumed["ema"]["updates"] == 3
    saved = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], resumed["best_weights"][k]) for k in saved)
    ema, raw = resumed["ema"]["module"], resumed["model"]  # the average trails the weights
    assert any(not torch.equal(ema[k], raw[k]) for k in raw if raw[k].is_floating_point())
