"""Snakemake script of rule features_summary."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.features.store import features_summary
from histodetect.runner import rule_context

with rule_context(snakemake):
    features_summary(snakemake.input, snakemake.output[0], snakemake.params.expect)
