"""The family table: one answer per mil.model, the schema's names and the code's the same."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from histodetect.errors import InputError
from histodetect.mil import summary_image, train, train_concat, train_topk
from histodetect.mil.families import (
    BAG_MODELS,
    FAMILIES,
    check_mil_section,
    family,
    family_of_format,
)
from histodetect.mil.models import MODELS

SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
MIL = yaml.safe_load(SCHEMA.read_text())["properties"]["mil"]["properties"]


def test_the_schema_lists_the_families_the_code_has() -> None:
    assert MIL["model"]["enum"] == list(FAMILIES)
    assert tuple(BAG_MODELS) == tuple(MODELS)
    assert MIL["concat"]["properties"]["score"]["enum"] == list(summary_image.SCORES)
    assert MIL["topk"]["properties"]["select"]["enum"] == list(train_topk.SELECT)


def test_each_family_names_its_options_and_its_files() -> None:
    modules = {
        train.FORMAT: train,
        train_concat.FORMAT: train_concat,
        train_topk.FORMAT: train_topk,
    }
    for name, fam in FAMILIES.items():
        assert modules[fam.format].__name__ == fam.module
        options = fam.options_from({"model": name, "task": "ordinal"}, 7, {"backbone": "x"})
        assert dataclasses.is_dataclass(options) and callable(options.plan)
        assert (options.seed, options.task) == (7, "ordinal")
        assert family_of_format(fam.format).reads == fam.reads  # type: ignore[union-attr]
    assert [n for n, f in FAMILIES.items() if f.reads_tiles] == ["concat", "topk"]
    assert family("topk").options_from({}, 0, {"backbone": "resnet10t"}).backbone == "resnet10t"
    assert family("concat").options_from({}, 0, {"backbone": "x"}).backbone == "resnet18"
    assert family_of_format("histodetect-tile-classifier/1") is None


def test_the_checks_before_any_job_name_the_config() -> None:
    good = {"model": "transformer", "hidden": 128, "transformer_heads": 4}
    assert check_mil_section(good, "my.yaml").name == "transformer"
    with pytest.raises(InputError, match=r"my\.yaml: mil\.hidden \(130\) must be a multiple"):
        check_mil_section({**good, "hidden": 130}, "my.yaml")
    assert check_mil_section({**good, "model": "abmil", "hidden": 130}, "c").name == "abmil"
    with pytest.raises(InputError, match=r"mil\.model 'gnn': one of mean, max"):
        family("gnn")


@pytest.mark.parametrize("task", ["regression", "survival"])
@pytest.mark.parametrize("model", ["concat", "topk"])
def test_a_family_that_reads_tiles_refuses_a_numeric_label_in_one_line(
    model: str, task: str
) -> None:
    mil = {"model": model, "task": task, "hidden": 128, "transformer_heads": 4}
    with pytest.raises(InputError) as err:
        check_mil_section(mil, "c.yaml")
    assert str(err.value) == (
        f"c.yaml: mil.task {task} needs a bag model over the features "
        f"(mean, max, abmil, clam_sb, transformer); mil.model {model} learns classes only"
    )
    assert check_mil_section({**mil, "model": "abmil"}, "c.yaml").name == "abmil"


def test_horizons_and_risk_group_quantiles_must_rise() -> None:
    mil = {"model": "abmil", "task": "survival", "hidden": 128, "transformer_heads": 4}
    assert check_mil_section({**mil, "risk_groups": [0.33, 0.67], "horizons": [12]}, "c").name
    with pytest.raises(InputError) as err:
        check_mil_section({**mil, "risk_groups": [0.67, 0.33]}, "c.yaml")
    assert (
        str(err.value) == "c.yaml: mil.risk_groups [0.67, 0.33]: each must be above the one before"
    )
    with pytest.raises(InputError, match=r"mil\.horizons \[12, 12\]"):
        check_mil_section({**mil, "horizons": [12, 12]}, "c.yaml")
