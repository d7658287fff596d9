"""Snakemake script of rule report_description."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

import pandas as pd

from histodetect.evaluation.report import workflow_description
from histodetect.io import atomic_path
from histodetect.runner import rule_context

with rule_context(snakemake):
    metrics = json.loads(Path(snakemake.input.metrics).read_text())
    tiling = pd.read_csv(
        snakemake.input.tiling, sep="\t", dtype={"slide_id": str}, keep_default_na=False
    )
    with atomic_path(snakemake.output[0]) as tmp:
        tmp.write_text(workflow_description(metrics, tiling, snakemake.config))
