"""Snakemake script of rule mil_scatter: predicted against true number of the bags."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.mil.figures import read_predictions, scatter_png
from histodetect.runner import rule_context

with rule_context(snakemake):
    scatter_png(read_predictions(snakemake.input.predictions), snakemake.output.scatter)
