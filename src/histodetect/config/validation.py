"""Config and sample-sheet checks that fail with one line naming the key, column or row."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from histodetect.errors import InputError, name_some


def _load(schema_path: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(schema_path).read_text())


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def typed_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``--config`` values with the scalars inside a mapping or list typed as YAML types them.

    Snakemake parses ``--config mil='{enabled: true, model: mean}'`` with YAML's base loader:
    every scalar below the top level is a string (``'true'``), which the schema refuses.
    Each such string is read again with :func:`yaml.safe_load`, as the config file's own
    values are; top-level values (Snakemake types them itself) are left as they are.
    """

    def typed(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v) for v in value]
        if isinstance(value, str):
            try:
                return yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                return value
        return value

    return {k: typed(v) if isinstance(v, (dict, list)) else v for k, v in overrides.items()}


def merge_config(config: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Merge ``overrides`` into ``config`` in place, mapping by mapping (a partial ``mil``
    mapping changes only the keys it names)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merge_config(config[key], value)
        else:
            config[key] = value


def check_config(config: dict[str, Any], schema_path: str | Path, source: str) -> None:
    """Raise :class:`InputError` for the first unknown key or wrong value in ``config``."""
    validator = jsonschema.Draft202012Validator(_load(schema_path))
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    where = _where(error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        prefix = f"{where}." if error.absolute_path else ""
        raise InputError(source, f"unknown key {prefix}{extra[0]} (known: {name_some(known)})")
    raise InputError(source, f"{where}: {error.message}")


def read_sample_sheet(path: str | Path, schema_path: str | Path) -> pd.DataFrame:
    """Read a tab-separated sample sheet and check it (see :func:`check_sample_sheet`)."""
    try:
        samples = pd.read_csv(
            path, sep="\t", dtype={"slide_id": str, "patient_id": str, "path": str, "label": str}
        )
    except FileNotFoundError:
        raise InputError(path, "sample sheet not found") from None
    except pd.errors.EmptyDataError:
        raise InputError(
            path, "sample sheet is empty (expected slide_id, patient_id, path)"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"not a readable tab-separated sheet ({err})") from None
    check_sample_sheet(samples, schema_path, str(path))
    return samples


def check_sample_sheet(samples: pd.DataFrame, schema_path: str | Path, source: str) -> None:
    """Raise :class:`InputError` for a missing column, a bad value, a duplicate slide id, or
    one slide file listed twice (under two slide ids or two patients it would be able to
    cross the train/test split)."""
    schema = _load(schema_path)
    missing = [c for c in schema.get("required", []) if c not in samples.columns]
    if missing:
        raise InputError(
            source,
            f"missing column(s) {name_some(missing)}; the sheet has {name_some(samples.columns)}",
        )
    validator = jsonschema.Draft202012Validator(schema)
    for i, row in enumerate(samples.to_dict("records")):
        record = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
        error = jsonschema.exceptions.best_match(validator.iter_errors(record))
        if error is not None:
            raise InputError(
                source, f"row {i + 2}: column {_where(error.absolute_path)}: {error.message}"
            )
    dupes = samples.slide_id[samples.slide_id.duplicated()].unique()
    if len(dupes):
        raise InputError(source, f"duplicate slide_id(s) {name_some(dupes)}")
    check_one_row_per_file(samples, source)


def check_one_row_per_file(samples: pd.DataFrame, source: str) -> None:
    """Raise :class:`InputError` naming the first slide file that more than one row lists.

    Paths are compared after resolving ``~``, ``.``, ``..`` and symbolic links, so two
    spellings of one file count as the same file.
    """
    if "path" not in samples.columns or samples.empty:
        return
    real = samples.path.astype(str).map(lambda p: os.path.realpath(os.path.expanduser(p)))
    repeated = samples[real.duplicated(keep=False)]
    if repeated.empty:
        return
    first = real[repeated.index[0]]
    rows = repeated[real[repeated.index] == first]
    ids = name_some(rows.slide_id)
    patients = rows["patient_id"].dropna().unique() if "patient_id" in rows else []
    where = f" of patients {name_some(patients)}" if len(patients) > 1 else ""
    raise InputError(
        source,
        f"slide file {rows.path.iloc[0]} is listed {len(rows)} times, as slides {ids}{where}; "
        "one file must be one row (one slide of one patient), or it can fall on both sides "
        "of the train/test split",
    )
