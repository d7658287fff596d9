"""The run's settings, resolved once from the validated config: what each stage's rules read.

Every choice derived from more than one key is made here and nowhere else: where the tile
classifiers start (``train.init``), where the slide-label features come from
(``features.source`` auto), whose training patients the cohort's own encoder may see, the
feature files' encoder id, and ``mil.model``'s family with what it reads. The workflow builds
one :class:`RunSettings` when it starts (``workflow/rules/common.smk``) and hands each rule the
part it needs; the schema stays the one list of keys and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histodetect.errors import InputError
from histodetect.features.settings import (
    SourceChoice,
    encoder_id,
    encoder_record,
    file_sha256,
    resolve_source,
    settings_hash,
    spec_from_config,
    tile_settings,
)
from histodetect.features.store import import_paths
from histodetect.mil.families import Family, check_mil_section

SSL_ENCODER = "results/encoder/ssl/encoder.pt"
"""Where rule pretrain_encoder writes the cohort's own encoder."""
MIL_FOLDS = "results/mil/folds.tsv"
BOX_SPLIT = "results/splits/split.tsv"
WEIGHTS_CACHE = "results/features/.weights_sha256.json"


@dataclass(frozen=True)
class TrainSettings:
    """The tile classifiers' start and options (rules of ``training.smk``)."""

    init: str | None
    """``ssl`` (the cohort's own encoder) or None (checkpoint, hub or random weights)."""
    reason: str
    auto: bool
    """train.init was auto (the start is said when the run begins)."""
    options: dict[str, Any]
    """train_fold's options: the train section, the seed and the resolved start."""
    hard_negative_rounds: int
    tiling: dict[str, Any] | None
    """What a slide-mode model is trained at, recorded in its file (None in patch mode)."""


@dataclass(frozen=True)
class SslSettings:
    """The cohort's own self-supervised encoder (rule pretrain_encoder)."""

    model: str
    splits: dict[str, str]
    """Whose training patients it may see: ``mil`` (the slide-label folds) and/or ``box``."""
    record: dict[str, Any]
    """What it depends on, named in feature ids before it exists."""


@dataclass(frozen=True)
class FeatureSettings:
    """The tile embeddings per slide (rules of ``features.smk``)."""

    section: dict[str, Any]
    """The features section with ``source`` resolved (what extract_features reads)."""
    choice: SourceChoice
    model: str
    """The timm model the encoder runs (the ssl model with source ssl)."""
    encoder_id: str
    weights_sha256: str | None
    expectations: dict[str, Any]
    """What every feature file of this run must record (checked when summarised)."""

    @property
    def source(self) -> str:
        return self.choice.source


@dataclass(frozen=True)
class MilSettings:
    """The slide-label models (rules of ``mil.smk``)."""

    enabled: bool
    section: dict[str, Any]
    family: Family
    scores_dir: str | None
    """Detection tile scores a summary image draws by (``concat.score: detection``)."""
    topk_encoder: dict[str, Any] | None
    """Where topk's tile encoder starts (``backbone``, ``checkpoint``, ``pretrained``)."""

    @property
    def fold_params(self) -> dict[str, Any]:
        """What the bag folds depend on: a new bag model must not redraw them (survival: the
        sheet's outcome columns too)."""
        keys = ("bag", "classes", "task")
        if self.section.get("task") == "survival":
            keys += ("time_column", "event_column")
        return {key: self.section.get(key) for key in keys}

    @property
    def survival_params(self) -> dict[str, Any]:
        """What survival's metrics, risk groups and pictures read (``horizons``,
        ``risk_groups``, ``time_unit``); nothing for another task."""
        if self.section.get("task") != "survival":
            return {}
        return {key: self.section.get(key) for key in ("horizons", "risk_groups", "time_unit")}


@dataclass(frozen=True)
class RunSettings:
    """Every stage's resolved settings."""

    patch_mode: bool
    points_mode: bool
    annotation_import: dict[str, Any]
    """The annotation_import section, with ``points_mode`` in points mode (QuPath points
    beside outlines are then kept)."""
    train: TrainSettings
    ssl: SslSettings
    features: FeatureSettings
    mil: MilSettings

    def encoder_lines(self) -> list[str]:
        """Where the tile classifiers start and the slide-label features come from."""
        lines = []
        if self.train.auto and (self.points_mode or not self.mil.enabled):
            lines.append(f"histodetect: tile classifiers start from {self.train.reason}")
        if self.mil.enabled:
            tuned = self.mil.family.name == "topk"
            lines.append(
                f"histodetect: slide-label features from {self.features.model}: "
                f"{self.features.choice.reason}"
                + ("; mil.model topk fine-tunes it from the bag labels" if tuned else "")
            )
        return lines


def _hub_error(section: dict[str, Any], model: str) -> str | None:
    """Why timm's hub weights of ``model`` cannot be had, asked only when ``section``'s auto
    wants them (torch is imported then), or None."""
    if section["source"] != "auto" or not section["pretrained"] or section["checkpoint"]:
        return None
    from histodetect.features.encoder import hub_error

    return hub_error(model)


def _train_start(config: dict[str, Any], patch: bool, points: bool) -> tuple[str | None, str]:
    """train.init resolved: "ssl" or None and why. auto follows features.source auto's rule
    where the cohort's own encoder was measured to help (points mode: MITOS 2012 point F1
    0.216 -> 0.364, bench/ssl_encoder.py); in box and patch mode it starts from
    train.checkpoint, hub weights, else random init."""
    train = config["train"]
    init = train.get("init")
    if init != "auto":
        return init, f"train.init: {init or 'null'}"
    section = {"source": "auto", "checkpoint": train.get("checkpoint")}
    section["pretrained"] = train.get("pretrained")
    hub = _hub_error(section, train.get("backbone", "resnet18"))
    choice = resolve_source(section, hub_error=hub, key="train.init")
    if choice.source != "ssl":
        return None, choice.reason
    if points and not patch:
        return "ssl", choice.reason
    mode = "patch" if patch else "box"
    why = f"train.init auto in {mode} mode; train.init: ssl for the cohort's own encoder"
    return None, f"random init ({why})"


def _train(config: dict[str, Any], patch: bool, points: bool) -> TrainSettings:
    init, reason = _train_start(config, patch, points)
    options = {**config["train"], "seed": config["seed"], "init": init}
    options.pop("calibration", None)  # calibrate_fold's key: changing it retrains nothing
    if init == "ssl":
        options |= {"checkpoint": SSL_ENCODER, "pretrained": False}
    tiling = (
        None if patch else {k: config["tiling"][k] for k in ("tile_um", "target_mpp", "target_mag")}
    )
    rounds = 0 if patch else config["points"]["hard_negative_rounds"]
    auto = config["train"].get("init") == "auto"
    return TrainSettings(init, reason, auto, options, rounds, tiling)


def _ssl(config: dict[str, Any], features_source: str, train_init: str | None) -> SslSettings:
    mil = config["mil"]
    splits = {"mil": MIL_FOLDS} if features_source == "ssl" and mil["enabled"] else {}
    if train_init == "ssl" or (features_source == "ssl" and not mil["enabled"]):
        splits["box"] = BOX_SPLIT
    model = config["ssl"]["model"] or config["train"]["backbone"]
    record: dict[str, Any] = {
        "ssl": {**config["ssl"], "model": model},
        "seed": config["seed"],
        "split": config["split"],
        "tiling": tile_settings(config["tiling"]),
    }
    if "mil" in splits:  # the MIL folds' training patients (bags grouped by mil.bag)
        record |= {"splits": sorted(splits), "mil_bag": mil["bag"]}
    return SslSettings(model, splits, record)


def _features(
    config: dict[str, Any], choice: SourceChoice, ssl: SslSettings, slides: list[str]
) -> FeatureSettings:
    section = {**config["features"], "source": choice.source}
    if section["context"] == "none":  # as before the option: no rerun of finished extractions
        del section["context"]
    model = ssl.model if choice.source == "ssl" else section["model"]
    if choice.source == "import":
        folder = section["import_dir"]
        if not folder:
            raise InputError("config", "features.source import needs features.import_dir")
        import_paths(folder, slides)  # every slide of the sheet has its file, or one line
        ident = f"imported-{settings_hash({'dir': str(Path(folder).resolve())})}"
        return FeatureSettings(section, choice, model, ident, None, {"encoder_id": ident})
    weights = None
    if choice.source in ("timm", "checkpoint") and section["checkpoint"]:
        weights = file_sha256(section["checkpoint"], cache=WEIGHTS_CACHE)
    spec = spec_from_config({**section, "model": model}, config["seed"], SSL_ENCODER)
    record = encoder_record(spec, config["tiling"], weights=weights, ssl_settings=ssl.record)
    ident = encoder_id(spec, record)
    expect = {"encoder_id": ident, "tile_um": float(config["tiling"]["tile_um"])}
    return FeatureSettings(section, choice, model, ident, weights, expect)


def _mil(config: dict[str, Any], features: FeatureSettings, source: str) -> MilSettings:
    mil = config["mil"]
    chosen = check_mil_section(mil, source)
    scores = None
    if chosen.name == "concat" and mil["concat"]["score"] == "detection":
        scores = "results/scores"
    encoder = None
    if chosen.name == "topk" and mil["enabled"]:  # starts where the features' encoder does
        if features.source == "import":
            raise InputError(
                source,
                "mil.model topk fine-tunes a tile encoder: features.source import has none "
                "(use auto, ssl, checkpoint or timm)",
            )
        if features.source == "ssl":
            encoder = {"backbone": features.model, "checkpoint": SSL_ENCODER, "pretrained": False}
        else:
            weights = features.section["checkpoint"]  # a local file (checkpoint, or timm with one)
            pretrained = bool(features.section["pretrained"]) and not weights
            encoder = {"backbone": features.model, "checkpoint": weights, "pretrained": pretrained}
    return MilSettings(bool(mil["enabled"]), mil, chosen, scores, encoder)


def resolve_settings(
    config: dict[str, Any], *, source: str, slides: list[str], patch_mode: bool
) -> RunSettings:
    """Every stage's settings from the validated ``config`` (defaults filled in), ``source``
    naming it in errors, ``slides`` the sample sheet's ids; one line per fault."""
    points = config["labels"]["overlap"] == "point"
    train = _train(config, patch_mode, points)
    section = config["features"]
    choice = resolve_source(section, hub_error=_hub_error(section, section["model"]))
    ssl = _ssl(config, choice.source, train.init)
    features = _features(config, choice, ssl, slides)
    annotations = {
        **config.get("annotation_import", {}),
        **({"points_mode": True} if points else {}),
    }
    mil = _mil(config, features, source)
    return RunSettings(patch_mode, points, annotations, train, ssl, features, mil)
