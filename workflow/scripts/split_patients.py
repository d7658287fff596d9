"""Snakemake script of checkpoint split_patients."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import pandas as pd

from histodetect.annotations.formats import ImportSettings
from histodetect.annotations.lesions import lesion_slides
from histodetect.cohort.splits import split_patients
from histodetect.io import atomic_path
from histodetect.runner import rule_context

with rule_context(snakemake):
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype={"slide_id": str, "patient_id": str})
    tiling = pd.read_csv(snakemake.input.tiling, sep="\t", dtype={"slide_id": str})
    usable = set(tiling.loc[tiling.status == "ok", "slide_id"])
    excluded = sheet[~sheet.slide_id.isin(usable)].assign(split="excluded")
    sheet = sheet[sheet.slide_id.isin(usable)].reset_index(drop=True)
    positive = lesion_slides(
        sheet, snakemake.input.annotations, ImportSettings(**snakemake.params.annotation_import)
    )
    split = split_patients(
        sheet,
        positive,
        test_fraction=snakemake.params.split["test_fraction"],
        stratify_by=snakemake.params.split.get("stratify_by"),
        seed=snakemake.params.seed,
        source=snakemake.input.sheet,
    )
    with atomic_path(snakemake.output.split) as tmp:
        pd.concat([split, excluded], ignore_index=True).to_csv(tmp, sep="\t", index=False)
