"""Ensemble inference, TTA and heatmap placement."""

from __future__ import annotations

import json
import logging
import runpy
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from _fixtures import colour_slide, random_model, tile_table, write_tiff

from histodetect.detection.heatmap import Heatmap
from histodetect.detection.inference import heatmap_from_tiles, predict_tiles
from histodetect.fit.data import TileDataset, d4_transforms, normalize_batch
from histodetect.fit.model import load_model

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, list[Path]]:
    root = tmp_path_factory.mktemp("infer")
    path, labels = colour_slide(root / "slide.tiff")
    tiles = tile_table(path, labels).iloc[::5].reset_index(drop=True)  # 52 tiles
    models = [random_model(root / f"m{k}.pt", seed=k) for k in range(3)]
    return tiles, models


def _manual(tiles: pd.DataFrame, model_path: Path, tta: bool) -> np.ndarray:
    model, _ = load_model(model_path)
    x = normalize_batch(torch.stack([TileDataset(tiles)[i][0] for i in range(len(tiles))]))
    transforms = d4_transforms() if tta else d4_transforms()[:1]
    with torch.no_grad():
        probs = [torch.sigmoid(model(t(x))[:, 0]) for t in transforms]
    return torch.stack(probs).mean(0).numpy()


def test_single_model_matches_manual(setup: tuple[pd.DataFrame, list[Path]]) -> None:
    tiles, models = setup
    for tta in (False, True):
        got = predict_tiles(tiles, models[:1], batch_size=16, tta=tta)
        np.testing.assert_allclose(got, _manual(tiles, models[0], tta), rtol=1e-4, atol=1e-5)


def test_ensemble_reads_each_tile_once(
    setup: tuple[pd.DataFrame, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    tiles, models = setup
    reads: list[int] = []
    original = TileDataset.read_tile

    def counting(self: TileDataset, i: int) -> np.ndarray:
        reads.append(i)
        return original(self, i)

    monkeypatch.setattr(TileDataset, "read_tile", counting)
    predict_tiles(tiles, models, batch_size=16, tta=True)
    assert sorted(reads) == list(range(len(tiles)))


def test_heatmap_uses_the_tile_stride() -> None:
    tiles = pd.DataFrame({"row": [0, 1], "col": [0, 2], "size": [256, 256], "stride": [128, 128]})
    hm = heatmap_from_tiles(
        tiles, np.array([0.2, 0.8]), slide_id="s", mpp=0.5, level=0,
        slide_width=1000, slide_height=1000,
    )  # fmt: skip
    assert (hm.stride, hm.tile_size) == (128.0, 256.0)
    assert hm.prob.shape == (2, 3) and hm.prob[1, 2] == pytest.approx(0.8)


def test_ensemble_reductions(setup: tuple[pd.DataFrame, list[Path]]) -> None:
    tiles, models = setup
    singles = np.stack([predict_tiles(tiles, [m], batch_size=16) for m in models])
    mean = predict_tiles(tiles, models, batch_size=16)
    np.testing.assert_allclose(mean, singles.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        predict_tiles(tiles, models, batch_size=16, reduce="max"), singles.max(0), rtol=1e-6
    )
    np.testing.assert_allclose(
        predict_tiles(tiles, models, batch_size=16, reduce="median"),
        np.median(singles, 0),
        rtol=1e-6,
    )
    assert (predict_tiles(tiles, models, batch_size=16, reduce="max") >= mean - 1e-7).all()
    with pytest.raises(ValueError, match="reduce"):
        predict_tiles(tiles, models, reduce="min")


def test_order_follows_dataframe(setup: tuple[pd.DataFrame, list[Path]], tmp_path: Path) -> None:
    tiles, models = setup
    path2, labels2 = colour_slide(tmp_path / "other.tiff", seed=5)
    other = tile_table(path2, labels2).iloc[::9]
    mixed = pd.concat([tiles, other]).sample(frac=1.0, random_state=0).reset_index(drop=True)
    got = predict_tiles(mixed, models[:1], batch_size=7, num_workers=2)
    np.testing.assert_allclose(got, _manual(mixed, models[0], False), rtol=1e-4, atol=1e-5)


def test_tta_on_constant_image_equals_plain(tmp_path: Path, setup: tuple) -> None:
    slide = write_tiff(tmp_path / "flat.tiff", np.full((512, 512, 3), (180, 90, 150), np.uint8))
    tiles = tile_table(slide, np.zeros((2, 2), int))
    models = setup[1]
    np.testing.assert_allclose(
        predict_tiles(tiles, models, tta=True), predict_tiles(tiles, models), rtol=1e-5
    )


def test_models_must_agree(setup: tuple[pd.DataFrame, list[Path]], tmp_path: Path) -> None:
    tiles, models = setup
    other = random_model(tmp_path / "m64.pt", seed=0, tile_px=64)
    with pytest.raises(ValueError, match="tile_px"):
        predict_tiles(tiles, [models[0], other])
    with pytest.raises(ValueError, match="models expect"):
        predict_tiles(tiles.assign(tile_px=64), models[:1])


def test_heatmap_grid_placement() -> None:
    tiles = pd.DataFrame({"row": [0, 2, 1], "col": [3, 0, 1], "size": 256})
    hm = heatmap_from_tiles(
        tiles, np.array([0.1, 0.2, 0.3]), slide_id="s", mpp=0.25, level=1,
        slide_width=1100, slide_height=800,
    )  # fmt: skip
    assert hm.prob.shape == (3, 4) and hm.stride == 256 and hm.tile_size == 256
    assert hm.prob[0, 3] == pytest.approx(0.1) and hm.prob[2, 0] == pytest.approx(0.2)
    assert hm.prob[1, 1] == pytest.approx(0.3) and np.isnan(hm.prob).sum() == 9
    assert hm.tile_box(2, 0) == (0, 512, 256, 768)
    assert (hm.mpp, hm.level, hm.slide_width, hm.origin_x) == (0.25, 1, 1100, 0.0)


def _fold_copies(models: list[Path], root: Path, calibration: dict | None) -> list[Path]:
    """The models as ``root/fold_k/model.pt``, each with ``calibration`` beside it (or none)."""
    out = []
    for k, model in enumerate(models):
        (root / f"fold_{k}").mkdir(parents=True)
        out.append(shutil.copy(model, root / f"fold_{k}" / "model.pt"))
        if calibration is not None:
            (root / f"fold_{k}" / "calibration.json").write_text(json.dumps(calibration))
    return [Path(p) for p in out]


def _run_infer_script(tiles: pd.DataFrame, models: list[Path], tmp_path: Path) -> SimpleNamespace:
    slide_path = tiles["path"].iloc[0]
    tiles.drop(columns=["path", "label"]).to_parquet(tmp_path / "tiles.parquet")
    out = SimpleNamespace(heatmap=str(tmp_path / "h.npz"), scores=str(tmp_path / "s.parquet"))
    summary = tmp_path / "tiles.json"
    info = {"path": slide_path, "mpp": 0.5, "level": 0, "width": 1024, "height": 1024}
    summary.write_text(json.dumps(info))
    snakemake = SimpleNamespace(
        input=SimpleNamespace(
            tiles=str(tmp_path / "tiles.parquet"),
            summary=str(summary),
            models=[str(m) for m in models],
        ),
        output=out,
        params=SimpleNamespace(infer={"batch_size": 8, "tta": False}),
        wildcards=SimpleNamespace(slide="s1"),
        rule="infer_slide",
        log=[str(tmp_path / "infer.log")],
        threads=torch.get_num_threads(),
    )
    runpy.run_path(str(ROOT / "workflow/scripts/infer_slide.py"), {"snakemake": snakemake})
    return snakemake


def test_infer_slide_applies_each_models_calibration(
    setup: tuple[pd.DataFrame, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiles, models = setup
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(logging.root, "handlers", [])
    raw_models = _fold_copies(models[:1], tmp_path / "raw", {"method": "none"})
    sharp_models = _fold_copies(
        models[:1], tmp_path / "sharp", {"method": "temperature", "temperature": 0.25}
    )
    _run_infer_script(tiles, raw_models, (tmp_path / "raw"))
    _run_infer_script(tiles, sharp_models, (tmp_path / "sharp"))
    raw = pd.read_parquet(tmp_path / "raw" / "s.parquet")["prob"].to_numpy(np.float64)
    sharp = pd.read_parquet(tmp_path / "sharp" / "s.parquet")["prob"].to_numpy(np.float64)
    assert (np.abs(raw - 0.5) > 1e-3).all()  # the random model is off 0.5 (0.514 here)
    # T = 0.25: the same ranking, every probability four times further out in logit space
    assert (np.abs(sharp - 0.5) >= np.abs(raw - 0.5) - 1e-6).all()
    assert np.abs(sharp - 0.5).mean() > np.abs(raw - 0.5).mean() + 0.01
    logit = np.log(raw) - np.log1p(-raw)
    np.testing.assert_allclose(sharp, 1 / (1 + np.exp(-logit / 0.25)), rtol=1e-4, atol=1e-5)
    (tmp_path / "old").mkdir()
    old_models = _fold_copies(models[:1], tmp_path / "old" / "models", None)
    with pytest.raises(SystemExit):  # rule_context turns the InputError into one line
        _run_infer_script(tiles, old_models, tmp_path / "old")
    log_text = (tmp_path / "old" / "infer.log").read_text()
    assert "fold_0/calibration.json: missing" in log_text


def test_infer_slide_script(
    setup: tuple[pd.DataFrame, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiles, models = setup
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # the script redirects these
    monkeypatch.setattr(logging.root, "handlers", [])
    models = _fold_copies(models, tmp_path / "models", {"method": "none"})
    snakemake = _run_infer_script(tiles, models, tmp_path)
    out = snakemake.output
    scores = pd.read_parquet(out.scores)
    assert "path" not in scores and len(scores) == len(tiles)
    np.testing.assert_allclose(scores["prob"], predict_tiles(tiles, models), rtol=1e-5)
    hm = Heatmap.load(out.heatmap)
    assert (hm.slide_width, hm.slide_height, hm.mpp) == (1024, 1024, 0.5)
    first = scores.iloc[0]
    assert hm.prob[first["row"], first["col"]] == pytest.approx(first["prob"])
    assert "tiles: 100%" in Path(snakemake.log[0]).read_text()


def test_multiclass_model_gives_one_minus_background(
    setup: tuple[pd.DataFrame, list[Path]], tmp_path: Path
) -> None:
    from histodetect.fit.model import build_model, save_model

    tiles, _ = setup
    torch.manual_seed(0)
    path = tmp_path / "ce.pt"
    save_model(path, build_model("test_efficientnet", hidden=16, num_classes=3), {"tile_px": 32, "loss": "ce"})  # fmt: skip
    model, _ = load_model(path)
    x = normalize_batch(torch.stack([TileDataset(tiles)[i][0] for i in range(len(tiles))]))
    with torch.no_grad():
        want = 1 - torch.softmax(model(x), dim=1)[:, 0].numpy()
    got = predict_tiles(tiles, [path], batch_size=16)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_multiclass_ensemble_gives_each_class_probability(
    setup: tuple[pd.DataFrame, list[Path]], tmp_path: Path
) -> None:
    from histodetect.columns import class_prob_column
    from histodetect.detection.inference import predict_tile_classes
    from histodetect.fit.model import build_model, save_model

    tiles, binary = setup
    classes = ["background", "adeno", "squamous cell"]
    paths, want = [], []
    x = normalize_batch(torch.stack([TileDataset(tiles)[i][0] for i in range(len(tiles))]))
    for k in range(2):
        torch.manual_seed(k)
        paths.append(tmp_path / f"ce{k}.pt")
        meta = {"tile_px": 32, "loss": "ce", "classes": classes}
        save_model(paths[-1], build_model("test_efficientnet", hidden=16, num_classes=3), meta)
        with torch.no_grad():
            want.append(torch.softmax(load_model(paths[-1])[0](x), dim=1).numpy())
    for reduce, combine in (("mean", np.mean), ("max", np.max)):
        lesion, by_class = predict_tile_classes(tiles, paths, batch_size=16, reduce=reduce)
        assert list(by_class) == classes
        got = np.stack([by_class[c] for c in classes], axis=1)
        np.testing.assert_allclose(got, combine(want, axis=0), rtol=1e-4, atol=1e-5)
        one_minus = combine([1 - w[:, 0] for w in want], axis=0)
        np.testing.assert_allclose(lesion, one_minus, rtol=1e-4, atol=1e-5)
    assert class_prob_column("squamous cell") == "prob_squamous_cell"
    # binary models, or models of other classes, give the lesion probability alone
    assert predict_tile_classes(tiles, binary[:1], batch_size=16)[1] == {}
    assert predict_tile_classes(tiles, [paths[0], binary[0]], batch_size=16)[1] == {}
