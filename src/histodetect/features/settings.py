"""What a feature file is made of, and the id that names it (no torch: read at DAG build).

``encoder_id`` is ``<model>-<source>-<hash>``: the hash covers the encoder (architecture,
source, weights' sha256 or seed), its input (size, normalisation) and the tile settings, so
any change makes a new folder under ``results/features`` and a stale file is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from histodetect.errors import InputError
from histodetect.io import atomic_path

FORMAT = "histodetect-features/1"
SOURCES = ("timm", "checkpoint", "ssl", "import")
"""What an encoder is; ``features.source: auto`` resolves to one of them (:func:`resolve_source`)."""
CONTEXTS = ("none", "neighbours")
TILE_KEYS = ("tile_um", "stride_um", "target_mpp", "target_mag", "min_tissue", "tissue")


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder (the ``features`` section of the config)."""

    model: str = "resnet18"
    """timm architecture (also that of ``checkpoint`` and ``ssl`` weights)."""
    source: str = "timm"
    """``timm`` (hub weights with ``pretrained``, else seeded random init), ``checkpoint`` (a
    local weights file), ``ssl`` (the cohort's own encoder) or ``import`` (h5 files made
    elsewhere)."""
    pretrained: bool = False
    checkpoint: str | None = None
    """Local weights file (``checkpoint``) or the ssl encoder file (``ssl``)."""
    input_px: int | None = None
    """Side the tiles are resized to; None: the model's fixed input size, if it has one,
    else the tile's own."""
    seed: int = 42
    context: str = "none"
    """``neighbours``: each tile's features beside the mean of its 8 grid neighbours' (the
    tissue around it), twice the encoder's width; ``none``: the tile's alone."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"features.source must be one of {SOURCES}, not {self.source!r}")
        if self.source in ("checkpoint", "ssl") and not self.checkpoint:
            raise ValueError(f"features.source {self.source!r} needs a weights file")
        if self.context not in CONTEXTS:
            raise ValueError(f"features.context must be one of {CONTEXTS}, not {self.context!r}")


@dataclass(frozen=True)
class SourceChoice:
    """Where a run's tile encoder comes from, and why (printed before the run starts)."""

    source: str
    """``timm``, ``checkpoint``, ``ssl`` or ``import`` (never ``auto``)."""
    reason: str


def resolve_source(
    section: dict[str, Any], *, hub_error: str | None = None, key: str = "source"
) -> SourceChoice:
    """The encoder of a config section with ``source`` (``features`` or ``train``).

    ``auto``, the default, never starts from random weights: a local ``checkpoint`` when one
    is given, else timm's hub weights when ``pretrained`` is set and the hub answered
    (``hub_error``: why it did not, from :func:`histodetect.features.encoder.hub_error`),
    else the cohort's own self-supervised encoder. Any other source is taken as given.
    ``key`` names the setting in the reason (``train.init`` for the tile classifiers).
    """
    source = section.get("source", "auto")
    if source != "auto":
        if source == "timm" and section.get("checkpoint"):
            return SourceChoice("checkpoint", "a local weights file (checkpoint is set)")
        weights = "timm's hub weights" if section.get("pretrained") else "seeded random init"
        reasons = {
            "timm": f"{weights} (source: timm)",
            "checkpoint": "a local weights file (source: checkpoint)",
            "ssl": "the cohort's own self-supervised encoder (source: ssl)",
            "import": "feature files made elsewhere (source: import)",
        }
        return SourceChoice(source, reasons.get(source, source))
    if section.get("checkpoint"):
        return SourceChoice("checkpoint", f"a local weights file ({key} auto, checkpoint is set)")
    own = "the cohort's own self-supervised encoder (rule pretrain_encoder)"
    if section.get("pretrained"):
        if hub_error is None:
            return SourceChoice("timm", f"timm's hub weights ({key} auto, pretrained: true)")
        return SourceChoice("ssl", f"{own}: timm's hub could not be reached ({hub_error})")
    return SourceChoice("ssl", f"{own} ({key} auto, no checkpoint, pretrained: false)")


def spec_from_config(features: dict[str, Any], seed: int, ssl_path: str) -> EncoderSpec:
    """The encoder of a ``features`` config section (``ssl_path``: where pretrain writes);
    ``source: auto`` must have been resolved (:func:`resolve_source`)."""
    source = features.get("source", "timm")
    if source == "auto":
        raise ValueError("features.source auto: resolve it first (resolve_source)")
    checkpoint = features.get("checkpoint")
    if source == "ssl":
        checkpoint = ssl_path
    elif checkpoint and source == "timm":
        source = "checkpoint"
    return EncoderSpec(
        model=features.get("model", "resnet18"),
        source=source,
        pretrained=bool(features.get("pretrained", False)),
        checkpoint=checkpoint,
        input_px=features.get("input_px"),
        seed=seed,
        context=features.get("context") or "none",  # absent: as before the option
    )


def settings_hash(record: dict[str, Any], length: int = 10) -> str:
    """Short sha256 of a JSON-able record (keys sorted)."""
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> str:
    """sha256 of a file; with ``cache`` (a JSON file) kept by path, size and mtime."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        raise InputError(path, f"cannot read the encoder weights ({err.strerror})") from None
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    known: dict[str, str] = {}
    if cache is not None and Path(cache).exists():
        known = json.loads(Path(cache).read_text())
        if key in known:
            return known[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    known[key] = digest.hexdigest()
    if cache is not None:
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps(known, indent=1))
    return known[key]


def tile_settings(tiling: dict[str, Any]) -> dict[str, Any]:
    """The tiling keys that decide which tiles a slide has and what they show."""
    return {k: tiling.get(k) for k in TILE_KEYS}


def encoder_record(
    spec: EncoderSpec,
    tiling: dict[str, Any],
    *,
    weights: str | None = None,
    ssl_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the features of a tile depend on, as hashed into ``encoder_id``.

    ``weights``: sha256 of a ``checkpoint`` file; an ``ssl`` encoder is named by the settings
    that make it (``ssl_settings``: its config, the seed and the split), since it does not
    exist yet when the DAG is built; a ``timm`` one by ``pretrained`` or the seed.
    """
    record: dict[str, Any] = {"format": FORMAT, **asdict(spec), "tiling": tile_settings(tiling)}
    record.pop("checkpoint")
    if spec.context == "none":  # the ids of files made before the option stay as they were
        record.pop("context")
    if spec.source == "checkpoint":
        record["weights"] = weights
    elif spec.source == "ssl":
        record["ssl"] = ssl_settings
    if spec.source != "timm" or spec.pretrained:
        record.pop("seed")
    return record


def encoder_id(spec: EncoderSpec, record: dict[str, Any]) -> str:
    """Folder name of the features: ``<model>-<source>-<hash of record>``."""
    model = re.sub(r"[^\w.-]", "_", spec.model)
    source = "pretrained" if spec.source == "timm" and spec.pretrained else spec.source
    source = "random" if source == "timm" else source
    return f"{model}-{source}-{settings_hash(record)}"
