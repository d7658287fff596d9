"""The run's settings, resolved once: each derived choice made from the validated config."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from histodetect.config.settings import BOX_SPLIT, MIL_FOLDS, SSL_ENCODER, resolve_settings
from histodetect.errors import InputError

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
SHIPPED = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def config(**sections: dict) -> dict:
    """The shipped config with ``sections`` merged key by key, the schema's defaults filled."""
    cfg = copy.deepcopy(SHIPPED)
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    validate(cfg, SCHEMA)
    return cfg


def resolve(cfg: dict, **kw: object) -> object:
    return resolve_settings(cfg, source="my.yaml", slides=["s1"], patch_mode=False, **kw)


def test_defaults_never_start_the_features_from_random_weights() -> None:
    s = resolve(config(mil={"enabled": True}))
    assert s.features.source == "ssl" and s.features.model == s.ssl.model
    assert "features.source auto" not in s.features.choice.reason
    assert s.ssl.splits == {"mil": MIL_FOLDS}  # the MIL folds' training patients only
    assert s.features.encoder_id.startswith(f"{s.features.model}-")
    assert s.features.expectations["encoder_id"] == s.features.encoder_id
    assert s.mil.family.name == "abmil" and not s.mil.family.reads_tiles
    assert s.mil.fold_params == {k: s.mil.section[k] for k in ("bag", "classes", "task")}
    assert s.train.init is None and "random init" in s.train.reason  # box mode
    assert [line.split(":")[0] for line in s.encoder_lines()] == ["histodetect"]


def test_the_encoder_id_follows_what_the_features_depend_on() -> None:
    base = resolve(config(mil={"enabled": True})).features.encoder_id
    assert resolve(config(mil={"enabled": True})).features.encoder_id == base
    other = config(mil={"enabled": True}, ssl={"epochs": 3})
    assert resolve(other).features.encoder_id != base
    new_model = config(mil={"enabled": True, "model": "transformer"})
    assert resolve(new_model).features.encoder_id == base  # a new bag model reuses them


def test_points_mode_starts_the_tile_classifiers_from_the_cohorts_encoder() -> None:
    s = resolve(config(labels={"overlap": "point"}))
    assert s.points_mode and s.train.init == "ssl"
    assert s.train.options["checkpoint"] == SSL_ENCODER and not s.train.options["pretrained"]
    assert "calibration" not in s.train.options
    assert s.ssl.splits == {"box": BOX_SPLIT}
    assert s.annotation_import["points_mode"] is True  # QuPath points beside outlines kept
    assert "points_mode" not in resolve(config()).annotation_import  # box mode: as written


def test_topk_starts_where_the_features_do() -> None:
    s = resolve(config(mil={"enabled": True, "model": "topk"}))
    assert s.mil.family.reads_tiles
    assert s.mil.topk_encoder == {
        "backbone": s.features.model, "checkpoint": SSL_ENCODER, "pretrained": False
    }  # fmt: skip
    local = config(mil={"enabled": True, "model": "topk"}, features={"source": "timm"})
    assert resolve(local).mil.topk_encoder["checkpoint"] is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"mil": {"model": "transformer", "hidden": 130}}, r"my\.yaml: mil\.hidden \(130\)"),
        (
            {"mil": {"enabled": True, "model": "topk"}, "features": {"source": "import"}},
            "features.source import needs features.import_dir",
        ),
    ],
)
def test_faults_are_one_line_before_any_job(sections: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        resolve(config(**sections))


def test_topk_on_imported_features_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s1.h5").write_bytes(b"")
    cfg = config(
        mil={"enabled": True, "model": "topk"},
        features={"source": "import", "import_dir": str(tmp_path)},
    )
    with pytest.raises(InputError, match="topk fine-tunes a tile encoder"):
        resolve(cfg)


def test_survival_folds_depend_on_the_outcome_columns_too() -> None:
    s = resolve(config(mil={"enabled": True, "task": "survival", "bag": "patient"}))
    assert s.mil.fold_params == {"bag": "patient", "classes": None, "task": "survival",
                                 "time_column": "time", "event_column": "event"}  # fmt: skip
    assert s.mil.survival_params == {"horizons": None, "risk_groups": None, "time_unit": "days"}
    assert s.mil.section["ties"] == "efron"
    assert resolve(config(mil={"enabled": True})).mil.survival_params == {}
