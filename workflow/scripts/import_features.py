"""Snakemake script of rule import_features."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from histodetect.features.store import import_features
from histodetect.runner import rule_context

with rule_context(snakemake):
    import_features(
        snakemake.input.foreign,
        snakemake.output[0],
        slide_id=snakemake.wildcards.slide,
        encoder_id=snakemake.params.encoder_id,
    )
