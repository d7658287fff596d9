"""Snakemake script of rule make_demo_cohort."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from pathlib import Path

from histodetect.runner import rule_context
from histodetect.slides.graded import make_demo

with rule_context(snakemake):
    make_demo(Path(snakemake.output.samples).parent, dict(snakemake.params.demo))
