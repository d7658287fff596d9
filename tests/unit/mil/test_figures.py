"""Report pictures of the slide-label models: ROC, confusion and the most attended tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _drawn import capture_figures, data_axes, texts_outside
from PIL import Image
from sklearn.metrics import confusion_matrix

from histodetect.features.store import SlideFeatures, write_features
from histodetect.mil import figures
from histodetect.mil import top_tiles as top_tiles_module
from histodetect.mil.data import Bag, FeatureSource
from histodetect.mil.ensemble import macro_auc
from histodetect.mil.figures import PANELS, confusion, confusion_png, labelled, panels, roc_png
from histodetect.mil.models import BagModel, MilTask
from histodetect.mil.top_tiles import (
    TopTile,
    pick_bags,
    scoring_models,
    shown_split,
    top_tiles,
    top_tiles_png,
)

CLASSES = ["0", "1", "2"]


def _predictions(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Test and out-of-fold rows with probabilities that lean to the label, and 2 predict-only."""
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n) + 0.6 * np.eye(3)[y]
    probs /= probs.sum(1, keepdims=True)
    table = pd.DataFrame(probs, columns=[f"prob_{c}" for c in CLASSES])
    table.insert(0, "bag_id", [f"B{i}" for i in range(n)])
    table.insert(1, "split", np.where(np.arange(n) % 2, "test", "train"))
    table.insert(2, "label", [CLASSES[v] for v in y])
    table["call"] = [CLASSES[v] for v in probs.argmax(1)]
    extra = table.iloc[:2].assign(split="test", label="", bag_id=["N0", "N1"])
    return pd.concat([table, extra], ignore_index=True)


def test_roc_curves_are_the_one_vs_rest_aucs_of_the_metrics(tmp_path: Path) -> None:
    table = _predictions(np.random.default_rng(0), 80)
    aucs = roc_png(table, CLASSES, tmp_path / "roc.png")
    for split in ("test", "train"):
        part = labelled(table, split)
        y = part.label.astype(int).to_numpy()
        probs = part[[f"prob_{c}" for c in CLASSES]].to_numpy()
        assert set(aucs[split]) == set(CLASSES)
        assert abs(np.mean(list(aucs[split].values())) - macro_auc(y, probs)) < 1e-12
    assert Image.open(tmp_path / "roc.png").size == (1000, 480)

    binary = table.assign(label=np.where(table.label == "2", "1", table.label))
    binary = binary[binary.label != ""]
    assert set(roc_png(binary, ["0", "1"], tmp_path / "roc2.png")["test"]) == {"1"}


def test_confusion_counts_labels_against_calls_without_predict_only_bags(tmp_path: Path) -> None:
    table = _predictions(np.random.default_rng(1), 60)
    for split in ("test", "train"):
        part = labelled(table, split)
        want = confusion_matrix(part.label, part.call, labels=CLASSES)
        assert (confusion(part, CLASSES) == want).all()
    assert confusion(labelled(table, "test"), CLASSES).sum() == 30  # N0, N1 left out
    confusion_png(table, CLASSES, tmp_path / "confusion.png")
    assert Image.open(tmp_path / "confusion.png").size[0] > 300


def test_pick_bags_takes_each_class_in_turn() -> None:
    part = pd.DataFrame({"bag_id": list("abcdef"), "label": ["0", "0", "0", "0", "2", "1"]})
    assert pick_bags(part, CLASSES, 4) == ["a", "f", "e", "b"]
    assert pick_bags(part, CLASSES, 10) == ["a", "f", "e", "b", "c", "d"]


def test_the_most_attended_tile_is_read_from_its_slide_at_its_corner(tmp_path: Path) -> None:
    # a max-pooling model whose projection is the identity: the tile holding every
    # dimension's maximum gets all the weight; it lies in the bag's second slide
    model = BagModel("max", 4, 4, 2, 2, dropout=0.0).eval()
    with torch.no_grad():
        model.project[0].weight.copy_(torch.eye(4))
        model.project[0].bias.zero_()
    coords = np.array([[0, 0], [64, 0], [0, 64], [64, 64]])
    attrs = {"status": "ok", "size0": 64, "stride0": 64}
    deciding = np.ones((4, 4))
    deciding[2] = 9.0  # slide B's tile at (0, 64)
    for sid, features in (("A", np.ones((4, 4))), ("B", deciding)):
        write_features(tmp_path / f"{sid}.h5", SlideFeatures(features, coords, attrs))
    bag = Bag("bag1", "P1", 1, "test", -1, ("A", "B"))
    tiles = top_tiles([(model, MilTask("binary", ["0", "1"]))], FeatureSource(tmp_path), bag, 3)
    assert (tiles[0].slide_id, tiles[0].x, tiles[0].y, tiles[0].rank) == ("B", 0, 64, 1)
    assert tiles[0].weight == 1.0 and [t.rank for t in tiles] == [1, 2, 3]

    # slide B: grey, with a red square exactly where its top tile lies
    pixels = np.full((128, 128, 3), 200, np.uint8)
    pixels[64:128, 0:64] = (220, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "B.png")
    out = tmp_path / "top.png"
    top_tiles_png([("bag1", "1", "1", tiles[:1])], {"B": tmp_path / "B.png"}, out, 64)
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (image[..., 0] > 200) & (image[..., 1] < 40) & (image[..., 2] < 40)
    rows, cols = np.nonzero(red)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert red.sum() >= 0.5 * 64 * 64  # the tile is drawn large
    assert red.sum() >= 0.95 * box  # and all red: read at its corner, none of the grey around


def test_a_tile_picture_without_labelled_test_bags_says_so(tmp_path: Path) -> None:
    top_tiles_png([], {}, tmp_path / "none.png")
    image = np.asarray(Image.open(tmp_path / "none.png").convert("L"))
    assert (image < 100).any() and (image > 250).mean() > 0.9  # a line of text on white


def _out_of_fold_only(rng: np.random.Generator) -> pd.DataFrame:
    """``split.test_fraction: 0``: every labelled bag out of fold, and 2 predict-only."""
    table = _predictions(rng, 40)
    return table.assign(split=np.where(table.label == "", "test", "train"))


def test_without_labelled_test_bags_roc_and_confusion_show_out_of_fold_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = capture_figures(monkeypatch, figures)
    table = _out_of_fold_only(np.random.default_rng(2))
    assert panels(table) == PANELS[1:]
    aucs = roc_png(table, CLASSES, tmp_path / "roc.png")
    confusion_png(table, CLASSES, tmp_path / "confusion.png")
    assert list(aucs) == ["train"] and set(aucs["train"]) == set(CLASSES)
    roc, matrix = saved
    assert data_axes(roc) == 1 and data_axes(matrix) == 1  # no empty test panel
    assert roc.axes[0].get_title().startswith("Out of fold (training bags)")
    assert Image.open(tmp_path / "roc.png").size == (520, 480)
    assert texts_outside(roc) == [] and texts_outside(matrix) == []

    # with labelled test bags both panels stay
    both = _predictions(np.random.default_rng(2), 40)
    assert panels(both) == PANELS
    roc_png(both, CLASSES, tmp_path / "roc2.png")
    confusion_png(both, CLASSES, tmp_path / "confusion2.png")
    assert [data_axes(fig) for fig in saved[2:]] == [2, 2]
    assert [texts_outside(fig) for fig in saved[2:]] == [[], []]


def test_without_labelled_test_bags_the_top_tiles_show_out_of_fold_bags() -> None:
    table = _out_of_fold_only(np.random.default_rng(3))
    assert shown_split(table) == "train"
    assert shown_split(_predictions(np.random.default_rng(3), 40)) == "test"
    picked = pick_bags(labelled(table, shown_split(table)), CLASSES, 4)
    assert len(picked) == 4 and set(table.split[table.bag_id.isin(picked)]) == {"train"}

    # a training bag is ranked by its own fold's model (it did not train on the bag), a test
    # bag by the whole ensemble
    models, folds = ["m0", "m1", "m2"], [0, 1, 2]
    held_out = Bag("b", "P", 1, "train", 1, ("S",))
    assert scoring_models(models, folds, held_out) == ["m1"]
    assert scoring_models(models, folds, Bag("t", "Q", 1, "test", -1, ("T",))) == models
    with pytest.raises(ValueError, match="fold 1"):
        scoring_models(["m0"], [0], held_out)


def test_top_tiles_of_out_of_fold_bags_say_so_and_every_title_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = capture_figures(monkeypatch, top_tiles_module)
    long_a, long_b = "TCGA-AB-1234-01Z-00-DX1.0123456789ABCDEF", "TCGA-AB-1234-02Z-00-DX2"
    paths = {}
    for sid in (long_a, long_b):
        paths[sid] = tmp_path / f"{sid}.png"
        Image.fromarray(np.full((128, 128, 3), 200, np.uint8)).save(paths[sid])
    tiles = [TopTile(long_a, 0, 0, 64, 1, 0.5), TopTile(long_b, 64, 64, 64, 2, 0.25)]
    rows = [("patient-TCGA-AB-1234-with-a-long-bag-id", "1", "0", tiles)]
    top_tiles_png(rows, paths, tmp_path / "oof.png", 64, split="train")
    top_tiles_png(rows, paths, tmp_path / "test.png", 64)
    oof, test = saved
    heading = oof._suptitle.get_text().replace("\n", " ")
    assert "out-of-fold bags" in heading and "test bags" not in heading
    assert "test bags" in test._suptitle.get_text().replace("\n", " ")
    for fig in saved:
        assert texts_outside(fig) == []
        renderer = fig.canvas.get_renderer()
        boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
        assert len(boxes) == 2 and not boxes[0].overlaps(boxes[1])  # side by side, apart


def test_a_numeric_label_is_drawn_predicted_against_true(tmp_path: Path) -> None:
    from histodetect.mil.figures import scatter_png

    table = pd.DataFrame(
        {"bag_id": list("abcde"), "split": ["test", "test", "train", "train", "predict"],
         "label": ["1", "2", "3", "4", ""], "target": [1.0, 2.0, 3.0, 4.0, np.nan],
         "prediction": [1.5, 2.5, 2.0, 4.5, 3.0]}
    )  # fmt: skip
    assert scatter_png(table, tmp_path / "s.png") == {"test": 2, "train": 2}
    assert (tmp_path / "s.png").stat().st_size > 0
    assert scatter_png(table[table.split != "test"], tmp_path / "t.png") == {"train": 2}


def test_pick_spread_takes_bags_from_low_to_high() -> None:
    from histodetect.mil.top_tiles import pick_spread

    part = pd.DataFrame({"bag_id": list("abcdefg"), "target": [6, 0, 5, 1, 4, 2, 3]})
    assert pick_spread(part, 3) == ["b", "g", "a"] and len(pick_spread(part, 9)) == 7


def test_survival_is_drawn_as_kaplan_meier_curves_of_the_risk_groups(tmp_path: Path) -> None:
    from histodetect.mil.figures import km_png

    n = 12
    table = pd.DataFrame(
        {"bag_id": [f"b{i}" for i in range(n)] + ["new"],
         "split": ["test"] * 4 + ["train"] * 8 + ["predict"],
         "label": ["x"] * n + [""], "time": [*range(1, n + 1), ""],
         "event": [1, 0] * (n // 2) + [-1],
         "risk_group": ["high", "low"] * (n // 2) + ["low"]}
    )  # fmt: skip
    found = km_png(table, tmp_path / "km.png")
    assert set(found) == {"test", "train"} and 0 <= found["train"] <= 1
    assert (tmp_path / "km.png").stat().st_size > 0
    assert set(km_png(table[table.split != "test"], tmp_path / "t.png")) == {"train"}


def test_three_risk_groups_are_drawn_with_numbers_at_risk_and_the_time_unit(
    tmp_path: Path,
) -> None:
    from matplotlib.figure import Figure

    from histodetect.mil import figures

    rng = np.random.default_rng(0)
    n = 60
    group = rng.choice(["low", "mid", "high"], n)
    time = rng.exponential(np.select([group == "low", group == "mid"], [40.0, 15.0], 5.0))
    table = pd.DataFrame(
        {"bag_id": [f"b{i}" for i in range(n)], "split": ["test"] * 20 + ["train"] * 40,
         "label": "x", "time": time.round(1), "event": (rng.random(n) < 0.7).astype(int),
         "risk_group": group}
    )  # fmt: skip
    metrics = {"time_unit": "months", "risk_groups": {"names": ["low", "mid", "high"]}}
    texts: list[str] = []
    real_save = figures.save_png

    def keep_texts(fig: Figure, path: Path) -> None:
        texts.extend(t.get_text() for ax in fig.axes for t in [*ax.texts, ax.xaxis.label])
        real_save(fig, path)

    figures.save_png = keep_texts
    try:
        found = figures.km_png(table, tmp_path / "km3.png", metrics)
    finally:
        figures.save_png = real_save
    assert found["train"] < 0.05 and "Time (months)" in texts
    assert "Number at risk" in texts and {"low", "mid", "high"} <= set(texts)
    train = table[table.split == "train"]
    assert str(len(train[train.risk_group == "mid"])) in texts  # all at risk at time 0
