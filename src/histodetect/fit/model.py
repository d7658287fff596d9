"""Tile classifier (timm backbone + MLP head), losses and self-describing model files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from histodetect.fit.data import IMAGENET_MEAN, IMAGENET_STD
from histodetect.io import atomic_path

log = logging.getLogger(__name__)
FORMAT = "histodetect-tile-classifier/1"
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "backbone")
_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


class TileClassifier(nn.Module):
    """Backbone feature extractor followed by ``Linear-ReLU-Dropout-Linear``.

    ``forward`` returns logits of shape ``(N, num_classes)``.
    """

    def __init__(
        self, backbone: nn.Module, arch: dict[str, Any], hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Linear(feature_width(backbone), hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, arch["num_classes"]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def feature_width(backbone: nn.Module) -> int:
    """Width of a timm backbone's pooled output (``head_hidden_size`` when it has pre-logits)."""
    width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    return int(width)


def build_model(
    backbone: str = "resnet18",
    pretrained: bool = False,
    checkpoint: str | None = None,
    hidden: int = 256,
    dropout: float = 0.2,
    num_classes: int = 1,
) -> TileClassifier:
    """Create a tile classifier.

    Args:
        backbone: timm model name.
        pretrained: load timm's pretrained weights (may download from the Hugging Face hub).
        checkpoint: local file of backbone weights loaded instead (non-matching keys skipped).
        hidden: width of the head's hidden layer.
        dropout: dropout before the last layer.
        num_classes: number of logits (1 for binary lesion/background).
    """
    net = timm.create_model(backbone, pretrained=pretrained and checkpoint is None, num_classes=0)
    if checkpoint is not None:
        load_backbone_weights(net, checkpoint)
    arch = {"backbone": backbone, "hidden": hidden, "dropout": dropout, "num_classes": num_classes}
    return TileClassifier(net, arch, hidden, dropout)


def load_backbone_weights(net: nn.Module, path: str | Path) -> int:
    """Load matching tensors of a local checkpoint into ``net``; return how many matched.

    Accepts plain state dicts, ``.safetensors`` files and training checkpoints wrapping
    them (``state_dict``, ``model``, ...), with ``module.``/``backbone.`` prefixes.

    Raises:
        ValueError: when no tensor of the file matches ``net`` by name and shape.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(state, dict) and (key := next((k for k in _WRAPPER_KEYS if k in state), None)):
        state = state[key]
    own = net.state_dict()
    matched: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        if name in own and own[name].shape == tensor.shape:
            matched[name] = tensor
    if not matched:
        raise ValueError(f"no tensor of {path} matches the backbone (names or shapes differ)")
    net.load_state_dict(matched, strict=False)
    log.info("loaded %d/%d backbone tensors from %s", len(matched), len(own), path)
    return len(matched)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; ``"cuda"`` fails without a GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


class FocalLoss(nn.Module):
    """Binary focal loss on logits (Lin et al. 2017), mean over elements.

    Args:
        alpha: weight of the positive class (``1 - alpha`` for negatives); None for none.
        gamma: focusing parameter; 0 gives (alpha-weighted) BCE.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = torch.exp(-bce)
        loss = (1 - p_t) ** self.gamma * bce
        if self.alpha is not None:
            loss = (self.alpha * target + (1 - self.alpha) * (1 - target)) * loss
        return loss.mean()


def make_loss(
    name: str,
    pos_weight: float | None = None,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    class_weights: list[float] | None = None,
) -> nn.Module:
    """Loss on logits: binary ``"bce"`` (optional ``pos_weight``) or ``"focal"``, or ``"ce"``.

    ``"ce"`` is cross-entropy over ``(N, num_classes)`` logits and integer class targets,
    weighted per class by ``class_weights`` when given.
    """
    if name == "ce":
        if pos_weight is not None:
            raise ValueError("pos_weight is for 'bce'; weight cross-entropy with class_weights")
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        return nn.CrossEntropyLoss(weight=weight)
    if class_weights is not None:
        raise ValueError(f"class_weights are for 'ce', not {name!r}")
    if name == "bce":
        weight = None if pos_weight is None else torch.tensor(float(pos_weight))
        return nn.BCEWithLogitsLoss(pos_weight=weight)
    if name == "focal":
        if pos_weight is not None:
            raise ValueError("pos_weight is for 'bce'; weight the focal loss with alpha")
        return FocalLoss(alpha, gamma)
    raise ValueError(f"unknown loss {name!r}; expected 'bce', 'focal' or 'ce'")


def balanced_loss_weights(counts: list[float], loss: str) -> dict[str, Any]:
    """The :func:`make_loss` arguments that weigh each class as if the classes were equal.

    ``counts`` are the training rows per class (label order). Cross-entropy: class ``c``
    weighs ``n / (K * n_c)`` over the ``K`` classes present (an absent class weighs 0); BCE:
    ``pos_weight = n_neg / n_pos``; focal: ``alpha = n_neg / n`` (positives weigh the share of
    negatives). A binary set without both classes keeps the unweighted loss.
    """
    n = [float(c) for c in counts]
    if loss == "ce":
        present = sum(c > 0 for c in n)
        return {"class_weights": [sum(n) / (present * c) if c > 0 else 0.0 for c in n]}
    neg, pos = n[0], sum(n[1:])
    if neg <= 0 or pos <= 0:
        return {}
    if loss == "focal":
        return {"alpha": neg / (neg + pos)}
    return {"pos_weight": neg / pos}


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write weights plus everything :func:`load_model` needs (atomically).

    ``meta`` must hold ``tile_px``; ``mean``/``std`` default to ImageNet statistics.
    Other JSON-like entries (fold, epoch, metrics, ...) are stored as they are.
    """
    if "tile_px" not in meta:
        raise KeyError("meta must hold 'tile_px'")
    arch = getattr(model, "arch", None)
    if arch is None:
        raise TypeError("model was not made by build_model (no 'arch' attribute)")
    full = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **meta, **arch}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "meta": full, "state_dict": state}, tmp)


def read_model_meta(path: str | Path) -> dict[str, Any]:
    """The record of a model file (tile size, classes, tiling, training patients...), no network."""
    blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a histodetect model file")
    return blob["meta"]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model`, in eval mode on ``device``."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a histodetect model file")
    meta = blob["meta"]
    model = build_model(
        meta["backbone"],
        hidden=meta["hidden"],
        dropout=meta["dropout"],
        num_classes=meta["num_classes"],
    )
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), meta
