"""Frozen tile encoders: any timm model, with hub weights, a local file or the cohort's own."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch import nn

from histodetect.errors import InputError
from histodetect.features.settings import EncoderSpec, file_sha256
from histodetect.fit.model import feature_width, load_backbone_weights

log = logging.getLogger(__name__)


@dataclass
class Encoder:
    """A timm backbone without its classifier (pooled features) and how to feed it."""

    net: nn.Module
    spec: EncoderSpec
    input_px: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str

    @property
    def dim(self) -> int:
        return feature_width(self.net)

    def attrs(self) -> dict[str, Any]:
        """What a feature file records of its encoder."""
        return {
            "encoder": self.spec.model,
            "encoder_source": self.spec.source,
            "weights_sha256": self.weights_sha256,
            "input_px": self.input_px,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def build_encoder(spec: EncoderSpec, tile_px: int, weights_sha256: str | None = None) -> Encoder:
    """The encoder of ``spec``, in eval mode on the CPU, for tiles of ``tile_px``.

    Normalisation and input size come from the model's timm configuration (a foundation
    model's own with its weights file); a model that takes any input size gets the tiles as
    they are unless ``spec.input_px`` says otherwise. ``weights_sha256``: the checkpoint's, when
    the caller has hashed it already (the workflow does, once per version of the file).

    Raises:
        InputError: when timm cannot fetch hub weights (offline: one line saying how to give
            a local file instead) or a weights file does not fit the model.
    """
    if spec.source == "import":
        raise ValueError("imported features have no encoder to build")
    torch.manual_seed(spec.seed)  # random init is part of what the features are
    hub = spec.source == "timm" and spec.pretrained
    try:
        net = timm.create_model(spec.model, pretrained=hub, num_classes=0)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise InputError("features.model", f"timm has no model {spec.model!r}") from None
        raise
    except Exception as err:  # hub unreachable: huggingface_hub raises its own errors
        if not hub:
            raise
        raise InputError(
            "features.pretrained",
            f"timm could not fetch {spec.model}'s pretrained weights ({type(err).__name__}: "
            f"{err}); offline, download them elsewhere and set features.checkpoint: PATH "
            "(a local weights file in timm layout) with features.pretrained: false",
        ) from None
    if spec.checkpoint is not None:
        try:
            load_backbone_weights(net, spec.checkpoint)
        except (ValueError, OSError, RuntimeError) as err:
            raise InputError(spec.checkpoint, f"cannot load as {spec.model} ({err})") from None
        weights = weights_sha256 or file_sha256(spec.checkpoint)
    else:
        weights = state_sha256(net)
    config = timm.data.resolve_model_data_config(net)
    fixed = bool(getattr(net, "pretrained_cfg", {}).get("fixed_input_size", False))
    input_px = spec.input_px or (int(config["input_size"][-1]) if fixed else tile_px)
    mean = tuple(float(v) for v in config["mean"])
    std = tuple(float(v) for v in config["std"])
    return Encoder(net.eval(), spec, input_px, mean, std, weights)  # type: ignore[arg-type]


def state_sha256(net: nn.Module) -> str:
    """sha256 over a model's tensors (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def hub_error(model: str) -> str | None:
    """None when timm can load ``model``'s pretrained weights (fetched once into its cache),
    else why not, in a few words (offline: the hub cannot be reached)."""
    try:
        timm.create_model(model, pretrained=True, num_classes=0)
    except Exception as err:  # huggingface_hub and urllib raise their own errors
        return f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    return None
