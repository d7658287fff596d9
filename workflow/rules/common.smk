# What every stage needs: the config (checked, its defaults filled in, every derived choice
# resolved once into SETTINGS), the sample sheet, the wildcards and the per-slide helpers.
# Each stage's own input functions live in its rule file (workflow/rules/<stage>.smk).
import os
from pathlib import Path

import pandas as pd
from snakemake.utils import min_version, validate

from histodetect.config.settings import SSL_ENCODER, resolve_settings
from histodetect.config.validation import (
    check_config,
    merge_config,
    read_sample_sheet,
    typed_overrides,
)
from histodetect.errors import InputError
from histodetect.evaluation.closing import (
    mil_predict_summary_lines,
    mil_summary_lines,
    run_summary_lines,
)
from histodetect.slides.graded import planned_sheet
from histodetect.worker import start_worker, stop_worker

min_version("9.0")


SAMPLES_SCHEMA = workflow.source_path("../schemas/samples.schema.yaml")
# --config mil='{enabled: true, model: mean}' arrives with its inner values as strings
# ('true'); typed as the config file's values are, merged key by key into the defaults.
CONFIG_OVERRIDES = workflow.config_settings.overwrite_config or {}
merge_config(config, typed_overrides(CONFIG_OVERRIDES))
CONFIG_SOURCE = (
    " + ".join(
        [*map(str, workflow.configfiles), *(["--config"] if CONFIG_OVERRIDES else [])]
    )
    or "config"
)
check_config(
    config, workflow.source_path("../schemas/config.schema.yaml"), CONFIG_SOURCE
)
validate(config, "../schemas/config.schema.yaml")  # fills in the schema's defaults
WORKER = []  # the run's preloaded job process (histodetect.worker), started by onstart

PATCH_LABELS = config.get("patches", {}).get("labels")  # patch mode: rules/cohort.smk
DEMO = config["demo"]["enabled"] and not PATCH_LABELS
if DEMO:
    SAMPLE_SHEET = "results/demo/samples.tsv"
    ANNOTATIONS = "results/demo/annotations.csv"
    samples = planned_sheet(config["demo"])  # label (graded): the planned grade
elif PATCH_LABELS:
    SAMPLE_SHEET = ANNOTATIONS = PATCH_LABELS
    samples = pd.DataFrame(columns=["slide_id", "patient_id", "path"], dtype=str)
else:
    SAMPLE_SHEET = config["samples"]
    ANNOTATIONS = config["annotations"]
    samples = read_sample_sheet(
        SAMPLE_SHEET, SAMPLES_SCHEMA
    )  # checked against the schema
samples = samples.set_index("slide_id", drop=False)
SLIDES = list(samples.slide_id)
FOLDS = list(range(config["folds"]))
# Each slide's sheet row, looked up once per job in O(1) (a pandas lookup costs ~0.1 ms a job).
SHEET_ROWS = {
    row["slide_id"]: {
        k: v for k, v in row.items() if not (isinstance(v, float) and pd.isna(v))
    }
    for row in samples.to_dict("records")
}

# Every choice made from several keys (histodetect.config.settings): where the tile
# classifiers start, where the slide-label features come from, the feature files' encoder id,
# mil.model's family. The rules read these, not the raw keys behind them.
SETTINGS = resolve_settings(
    config, source=CONFIG_SOURCE, slides=SLIDES, patch_mode=bool(PATCH_LABELS)
)


# The slide wildcard is any file name; which ids exist is checked by sheet_row (one clear
# error). An alternation of every slide id here is scanned for every job: DAG time grows with
# slides squared (docs/scaling.md).
wildcard_constraints:
    slide=r"[^/]+",
    fold=r"\d+",


def sheet_row(slide):
    """The sample sheet's row of ``slide`` (empty values left out), or one clear error."""
    try:
        return SHEET_ROWS[slide]
    except KeyError:
        raise InputError(
            SAMPLE_SHEET, f"slide {slide!r} is not in the sample sheet"
        ) from None


def slide_file(wildcards):
    return sheet_row(wildcards.slide)["path"]


def slide_path(wildcards):
    """The slide file as an input, when it exists.

    A missing file is not declared, so tile_slide runs and records one clear error for that
    slide instead of Snakemake refusing the whole cohort; once the file appears, the changed
    input set reruns the slide.
    """
    path = slide_file(wildcards)
    return path if DEMO or os.path.exists(path) else []


def over_slides(pattern, slides):
    """An input function: ``pattern`` for each slide that ``slides()`` names when the DAG
    asks (after the checkpoint it reads has run)."""

    def inner(wildcards):
        return expand(pattern, slide=slides())

    return inner


def table_of(path, **dtype):
    """A tab-separated table the workflow wrote, read as text (ids stay as written)."""
    return pd.read_csv(path, sep="\t", dtype=dtype or str, keep_default_na=False)


def closing_lines():
    """The run's closing lines (histodetect.evaluation.closing): left-out slides and bags,
    then the headline scores of each stage that ran."""
    lines = run_summary_lines(config["evaluate"]["giou"])
    if MIL.enabled:
        lines += mil_summary_lines(Path(MIL_DIR))
    if MIL.enabled and PREDICT_SHEET:
        lines += mil_predict_summary_lines(Path(PREDICT_MIL_DIR))
    return lines
