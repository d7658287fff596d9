"""Snakemake script of rule mil_km: Kaplan-Meier curves of the risk groups."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

from histodetect.mil.figures import km_png, read_predictions
from histodetect.runner import rule_context

with rule_context(snakemake):
    metrics = json.loads(Path(snakemake.input.metrics).read_text())
    km_png(read_predictions(snakemake.input.predictions), snakemake.output.km, metrics)
