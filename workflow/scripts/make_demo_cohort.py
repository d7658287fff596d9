"""Snakemake script of rule make_demo_cohort."""

from pathlib import Path

from histodetect.runner import rule_context
from histodetect.slides.synthetic import make_cohort

with rule_context(snakemake):
    params = dict(snakemake.params.demo)
    for key in ("lesions_per_slide", "lesion_size_um"):
        if key in params:
            params[key] = tuple(params[key])  # YAML gives lists
    make_cohort(Path(snakemake.output.samples).parent, **params)
