"""Snakemake script of rule mil_decision: the out-of-fold decision beside the fold models."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.mil.ensemble import write_decision
from histodetect.runner import rule_context

with rule_context(snakemake):
    write_decision(
        list(snakemake.input.models),
        list(snakemake.input.predictions),
        snakemake.output[0],
        snakemake.params.survival,
    )
