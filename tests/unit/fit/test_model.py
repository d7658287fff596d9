"""Model construction, checkpoint loading, losses and model files."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from histodetect.fit.model import (
    FocalLoss,
    balanced_loss_weights,
    build_model,
    load_model,
    make_loss,
    save_model,
)


def test_build_model_shapes_and_head() -> None:
    model = build_model("resnet18", hidden=32, dropout=0.1).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1)
    kinds = [type(m) for m in model.head]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert model.head[0].in_features == 512 and model.head[0].out_features == 32


def test_checkpoint_weights_are_loaded(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("resnet18", num_classes=10)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "backbone.pth")
    model = build_model("resnet18", checkpoint=str(tmp_path / "backbone.pth"))
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="no tensor"):
        build_model("resnet18", checkpoint=str(tmp_path / "bad.pth"))


def test_save_load_roundtrip(tmp_path: Path) -> None:
    model = build_model("resnet18", hidden=16, dropout=0.3).eval()
    save_model(tmp_path / "m.pt", model, {"tile_px": 32, "fold": 2})
    loaded, meta = load_model(tmp_path / "m.pt", "cpu")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training
    assert meta["backbone"] == "resnet18" and meta["hidden"] == 16 and meta["dropout"] == 0.3
    assert meta["tile_px"] == 32 and meta["fold"] == 2 and len(meta["mean"]) == 3
    with pytest.raises(KeyError, match="tile_px"):
        save_model(tmp_path / "x.pt", model, {})
    assert not (tmp_path / "x.pt").exists()


def test_focal_loss() -> None:
    logits = torch.tensor([3.0, -2.0, 0.5, -0.1])
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(FocalLoss(alpha=None, gamma=0.0)(logits, target), bce)
    assert FocalLoss(alpha=None, gamma=2.0)(logits, target) < bce
    easy = FocalLoss(None, 2.0)(torch.tensor([6.0]), torch.tensor([1.0]))
    hard = FocalLoss(None, 2.0)(torch.tensor([-1.0]), torch.tensor([1.0]))
    assert easy < 1e-3 * hard


def test_make_loss() -> None:
    assert isinstance(make_loss("focal", alpha=0.5, gamma=1.0), FocalLoss)
    bce = make_loss("bce", pos_weight=3.0)
    value = bce(torch.tensor([0.0]), torch.tensor([1.0]))
    torch.testing.assert_close(value, 3 * torch.log(torch.tensor(2.0)))
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge")


def test_cross_entropy_and_pre_logit_width() -> None:
    ce = make_loss("ce")
    logits, target = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    torch.testing.assert_close(ce(logits, target), -torch.log_softmax(logits, 1)[0, 0])
    model = build_model("mobilenetv3_small_050", hidden=8, num_classes=3).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)  # conv head of 1024 features


def test_balanced_loss_weights_match_hand_values() -> None:
    # 30 negatives, 10 positives: BCE weighs a positive 3 times; focal alpha 30 / 40.
    assert balanced_loss_weights([30, 10], "bce") == {"pos_weight": 3.0}
    assert balanced_loss_weights([30, 10], "focal") == {"alpha": 0.75}
    assert balanced_loss_weights([30, 0], "bce") == {}  # one class: nothing to balance
    # 60, 30, 10 of 100 rows, 3 classes: n / (K n_c) = 100/180, 100/90, 100/30.
    got = balanced_loss_weights([60, 30, 10], "ce")["class_weights"]
    assert got == pytest.approx([100 / 180, 100 / 90, 100 / 30])
    assert balanced_loss_weights([60, 0, 40], "ce")["class_weights"] == pytest.approx(
        [100 / 120, 0.0, 100 / 80]
    )
    ce = make_loss("ce", class_weights=got)
    logits, y = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]), torch.tensor([0, 2])
    each = nn.functional.cross_entropy(logits, y, reduction="none")
    expected = (each[0] * got[0] + each[1] * got[2]) / (got[0] + got[2])
    torch.testing.assert_close(ce(logits, y), expected)
    bce = make_loss("bce", **balanced_loss_weights([30, 10], "bce"))
    x, t = torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.0])
    each = nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(bce(x, t), (3 * each[0] + each[1]) / 2)
    with pytest.raises(ValueError, match="class_weights"):
        make_loss("bce", class_weights=[1.0, 2.0])
