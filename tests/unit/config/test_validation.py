"""Config and sample-sheet checks: one line naming the key, column or row."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from histodetect.config.validation import (
    check_config,
    check_sample_sheet,
    merge_config,
    typed_overrides,
)
from histodetect.errors import InputError

ROOT = Path(__file__).resolve().parents[3]
CONFIG_SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SAMPLES_SCHEMA = ROOT / "workflow" / "schemas" / "samples.schema.yaml"
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_shipped_config_is_valid() -> None:
    check_config(CONFIG, CONFIG_SCHEMA, "config.yaml")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["tiling"].update(tile_umm=3), "unknown key tiling.tile_umm"),
        (lambda c: c.update(foldz=3), "unknown key foldz"),
        (
            lambda c: c["tiling"].update(tile_um="big"),
            "tiling.tile_um: 'big' is not of type 'number'",
        ),
        (lambda c: c.update(folds=1), "folds: 1 is less than the minimum of 2"),
        (lambda c: c["boxes"].update(method="blobs"), "boxes.method: 'blobs' is not one of"),
    ],
)
def test_bad_config_names_the_key(change, expected: str) -> None:
    config = copy.deepcopy(CONFIG)
    change(config)
    with pytest.raises(InputError, match=r"^my\.yaml: ") as err:
        check_config(config, CONFIG_SCHEMA, "my.yaml")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_a_partial_config_override_is_typed_and_merged_into_the_defaults() -> None:
    # what Snakemake's --config parser makes of mil='{enabled: true, model: mean, classes: [0, 1]}'
    # and folds=3: strings below the top level (YAML's base loader), the top level typed
    overrides = {"mil": {"enabled": "true", "model": "mean", "classes": ["0", "1"]}, "folds": 3}
    config = copy.deepcopy(CONFIG)
    with pytest.raises(InputError, match=r"mil\.enabled: 'true' is not of type 'boolean'"):
        merge_config(config, overrides)
        check_config(config, CONFIG_SCHEMA, "--config")
    config = copy.deepcopy(CONFIG)
    merge_config(config, typed_overrides(overrides))
    check_config(config, CONFIG_SCHEMA, "--config")
    assert config["mil"] == CONFIG["mil"] | {"enabled": True, "model": "mean", "classes": [0, 1]}
    assert config["folds"] == 3 and config["tiling"] == CONFIG["tiling"]


def test_typed_overrides_leave_top_level_and_unparsable_strings_alone() -> None:
    overrides = {"samples": "007.tsv", "mil": {"bag": "biopsy", "note": "a: b: c", "lr": "1e-3"}}
    typed = typed_overrides(overrides)
    assert typed["samples"] == "007.tsv"
    assert typed["mil"] == {"bag": "biopsy", "note": "a: b: c", "lr": "1e-3"}  # YAML 1.1: str


def sheet(**columns: list) -> pd.DataFrame:
    base = {"slide_id": ["a", "b"], "patient_id": ["p1", "p2"], "path": ["a.svs", "b.svs"]}
    base.update(columns)
    return pd.DataFrame({k: v for k, v in base.items() if v is not None})


def test_good_sheet_passes_with_optional_columns() -> None:
    check_sample_sheet(sheet(mpp=[0.25, float("nan")], centre=["x", "y"]), SAMPLES_SCHEMA, "s.tsv")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (sheet(patient_id=None, patient=["p1", "p2"]), "missing column(s) patient_id"),
        (sheet(slide_id=["a", "a"]), "duplicate slide_id(s) a"),
        (sheet(slide_id=["a", "b c"]), "row 3: column slide_id"),
        (sheet(mpp=[0.25, -1.0]), "row 3: column mpp"),
    ],
)
def test_bad_sheet_names_column_or_row(frame: pd.DataFrame, expected: str) -> None:
    with pytest.raises(InputError, match=r"^s\.tsv: ") as err:
        check_sample_sheet(frame, SAMPLES_SCHEMA, "s.tsv")
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            sheet(path=["x.svs", "x.svs"]),
            "slide file x.svs is listed 2 times, as slides a, b of patients p1, p2;",
        ),
        (
            sheet(path=["d/x.svs", "d/../d/./x.svs"], patient_id=["p1", "p1"]),
            "slide file d/x.svs is listed 2 times, as slides a, b;",
        ),
        (
            sheet(slide_id=["a", "b", "c"], patient_id=["p1", "p2", "p3"], path=["y", "x", "x"]),
            "slide file x is listed 2 times, as slides b, c of patients p2, p3;",
        ),
    ],
)
def test_one_slide_file_listed_twice_is_refused(frame: pd.DataFrame, expected: str) -> None:
    with pytest.raises(InputError, match=r"^s\.tsv: ") as err:
        check_sample_sheet(frame, SAMPLES_SCHEMA, "s.tsv")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_a_symbolic_link_to_a_listed_file_is_the_same_file(tmp_path: Path) -> None:
    (tmp_path / "x.svs").write_bytes(b"")
    (tmp_path / "link.svs").symlink_to(tmp_path / "x.svs")
    frame = sheet(path=[str(tmp_path / "x.svs"), str(tmp_path / "link.svs")])
    with pytest.raises(InputError, match="listed 2 times, as slides a, b"):
        check_sample_sheet(frame, SAMPLES_SCHEMA, "s.tsv")
    check_sample_sheet(sheet(path=[str(tmp_path / "x.svs"), "other.svs"]), SAMPLES_SCHEMA, "s")


def test_a_10000_row_sheet_of_one_file_gives_one_short_line() -> None:
    n = 10_000
    frame = pd.DataFrame(
        {
            "slide_id": [f"s{i:05d}" for i in range(n)],
            "patient_id": [f"p{i:05d}" for i in range(n)],
            "path": ["one.svs"] * n,
        }
    )
    with pytest.raises(
        InputError, match=r"^s\.tsv: slide file one\.svs is listed 10000 times"
    ) as err:
        check_sample_sheet(frame, SAMPLES_SCHEMA, "s.tsv")
    text = str(err.value)
    assert "\n" not in text and len(text) < 500
    assert (
        "as slides s00000, s00001, s00002, s00003, s00004, s00005, s00006, s00007, s00008, s00009, ... and 9990 more"
        in text
    )
    assert "of patients p00000, " in text and "p00009, ... and 9990 more;" in text
    assert "s00010" not in text and "p00010" not in text


def test_duplicate_ids_and_missing_columns_are_counted_past_ten() -> None:
    ids = [f"d{i}" for i in range(25)]
    frame = pd.DataFrame(
        {"slide_id": ids * 2, "patient_id": "p", "path": [f"{i}.svs" for i in range(50)]}
    )
    with pytest.raises(
        InputError, match=r"duplicate slide_id\(s\) d0, d1, .*, d9, \.\.\. and 15 more$"
    ):
        check_sample_sheet(frame, SAMPLES_SCHEMA, "s.tsv")
    wide = pd.DataFrame({f"c{i}": [1] for i in range(40)})
    with pytest.raises(InputError, match=r"the sheet has c0, .*, c9, \.\.\. and 30 more$"):
        check_sample_sheet(wide, SAMPLES_SCHEMA, "s.tsv")
