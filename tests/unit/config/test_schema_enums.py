"""The schema is the one list of choices: every enum the code also spells is the code's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from histodetect.annotations import labels
from histodetect.cohort import bags, sampling
from histodetect.detection import boxes, inference, slide_score
from histodetect.evaluation import detection_metrics
from histodetect.features import pretrain
from histodetect.features import settings as feature_settings
from histodetect.mil import families, summary_image, survival, train_topk
from histodetect.mil import models as mil_models
from histodetect.points import detect
from histodetect.training import calibration, train

SCHEMA = yaml.safe_load(
    (
        Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
    ).read_text()
)

# (key path in the schema, the code's choices, choices the schema adds before the code sees them)
PAIRS = [
    ("labels.overlap", labels.OVERLAPS, ()),
    ("sampling.strategy", sampling.STRATEGIES, ()),
    ("train.calibration", calibration.METHODS, ()),
    ("train.class_balance", train.BALANCES, ()),
    ("features.source", feature_settings.SOURCES, ("auto",)),
    ("features.context", feature_settings.CONTEXTS, ()),
    ("ssl.method", pretrain.METHODS, ()),
    ("infer.reduce", inference.REDUCERS, ()),
    ("boxes.method", boxes.METHODS, ()),
    ("boxes.score", boxes.SCORES, ()),
    ("points.method", detect.POINT_METHODS, ()),
    ("slide_score.method", slide_score.METHODS, ()),
    ("evaluate.froc_rule", detection_metrics.FROC_RULES, ()),
    ("mil.task", bags.TASKS, ()),
    ("mil.model", tuple(families.FAMILIES), ()),
    ("mil.regression_loss", mil_models.REGRESSION_LOSSES, ()),
    ("mil.ties", survival.TIES, ()),
    ("mil.class_balance", train.BALANCES, ()),
    ("mil.concat.score", summary_image.SCORES, ()),
    ("mil.topk.select", train_topk.SELECT, ()),
]


def schema_enum(path: str) -> list[Any]:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return node["enum"]


@pytest.mark.parametrize(("path", "code", "added"), PAIRS, ids=[p[0] for p in PAIRS])
def test_schema_and_code_offer_the_same_choices(path: str, code: tuple, added: tuple) -> None:
    assert sorted(schema_enum(path)) == sorted([*code, *added])
