"""The slide-label model families: per ``mil.model``, what it reads and where its code lives.

One table answers what the workflow and the scripts ask of a model family, so that each
question is asked in one place: does it read feature files or the slides' tiles, which options
class and module train, load and score it, which format tag its fold files carry, and what
must hold of the ``mil`` section before any job runs. The table is torch-free (the workflow
reads it while it builds the DAG); a family's code is imported when it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from itertools import pairwise
from typing import Any

from histodetect.cohort.bags import OUTCOME_TASKS
from histodetect.errors import InputError

BAG_MODELS = ("mean", "max", "abmil", "clam_sb", "transformer")
"""Bag models over feature files (:class:`histodetect.mil.models.BagModel`'s kinds)."""


@dataclass(frozen=True)
class Family:
    """One ``mil.model``: what it reads, its options class and its fold files' format."""

    name: str
    reads: str
    """``features`` (the feature files of the features section) or ``tiles`` (the slides)."""
    module: str
    """The module that holds its options class (``options``), trainer plan and loader."""
    options: str
    format: str
    """The ``format`` tag of its fold model files (how a saved model names its family)."""

    @property
    def reads_tiles(self) -> bool:
        return self.reads == "tiles"

    def options_class(self) -> Any:
        """The family's options dataclass (imports its module, and so torch)."""
        return getattr(import_module(self.module), self.options)

    def options_from(
        self, mil: dict[str, Any], seed: int, encoder: dict[str, Any] | None = None
    ) -> Any:
        """The family's options from the ``mil`` section, the seed and, for families that
        fine-tune a tile encoder, where it starts (``backbone``, ``checkpoint``,
        ``pretrained``)."""
        return self.options_class().from_section(mil, seed, encoder)


FAMILIES: dict[str, Family] = {
    **{
        name: Family(name, "features", "histodetect.mil.train", "MilConfig", "histodetect-mil-1")
        for name in BAG_MODELS
    },
    "concat": Family(
        "concat", "tiles", "histodetect.mil.train_concat", "ConcatConfig",
        "histodetect-mil-concat-1",
    ),
    "topk": Family(
        "topk", "tiles", "histodetect.mil.train_topk", "TopkConfig", "histodetect-mil-topk-1"
    ),
}  # fmt: skip
FORMATS = {f.format: f for f in FAMILIES.values()}


def family(name: str) -> Family:
    """The family of ``mil.model`` ``name`` (the schema lists the same names; a test checks)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise InputError("config", f"mil.model {name!r}: one of {', '.join(FAMILIES)}") from None


def family_of_format(fmt: str | None) -> Family | None:
    """The family whose fold files carry ``fmt``, or None (not a slide-label model file)."""
    return FORMATS.get(fmt or "")


def check_mil_section(mil: dict[str, Any], source: str) -> Family:
    """``mil.model``'s family, after the checks the schema cannot make, each one line naming
    ``source`` (the config): the transformer's width must split into its heads, a
    numeric outcome (``mil.task`` regression or survival) needs a bag model over the features,
    and survival's ``horizons`` and ``risk_groups`` quantiles must rise strictly."""
    chosen = family(mil["model"])
    for key in ("horizons", "risk_groups"):
        values = mil.get(key) or []
        if any(b <= a for a, b in pairwise(values)):
            raise InputError(source, f"mil.{key} {values}: each must be above the one before")
    if chosen.reads_tiles and mil["task"] in OUTCOME_TASKS:
        raise InputError(
            source,
            f"mil.task {mil['task']} needs a bag model over the features "
            f"({', '.join(BAG_MODELS)}); mil.model {chosen.name} learns classes only",
        )
    if chosen.name == "transformer" and mil["hidden"] % mil["transformer_heads"]:
        raise InputError(
            source,
            f"mil.hidden ({mil['hidden']}) must be a multiple of mil.transformer_heads "
            f"({mil['transformer_heads']})",
        )
    return chosen
