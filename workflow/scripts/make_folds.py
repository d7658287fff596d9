"""Snakemake script of rule make_folds."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import pandas as pd

from histodetect.annotations.formats import ImportSettings
from histodetect.annotations.lesions import lesion_slides
from histodetect.cohort.splits import make_folds
from histodetect.io import atomic_path
from histodetect.runner import rule_context

with rule_context(snakemake):
    split = pd.read_csv(snakemake.input.split, sep="\t", dtype={"slide_id": str, "patient_id": str})
    positive = lesion_slides(
        split, snakemake.input.annotations, ImportSettings(**snakemake.params.annotation_import)
    )
    folds = make_folds(
        split,
        positive,
        k=snakemake.params.folds,
        seed=snakemake.params.seed,
        source=snakemake.input.split,
    )
    with atomic_path(snakemake.output[0]) as tmp:
        folds.to_csv(tmp, sep="\t", index=False)
