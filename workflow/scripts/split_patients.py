"""Snakemake script of checkpoint split_patients."""

import pandas as pd

from histodetect.annotations import read_digilut_csv, slide_name_map
from histodetect.io import atomic_path
from histodetect.runner import rule_context
from histodetect.splits import split_patients

with rule_context(snakemake):
    sheet = pd.read_csv(snakemake.input.sheet, sep="\t", dtype={"slide_id": str, "patient_id": str})
    boxes = read_digilut_csv(snakemake.input.annotations, slide_name_map(sheet))
    split = split_patients(
        sheet,
        set(boxes.slide_id),
        test_fraction=snakemake.params.split["test_fraction"],
        stratify_by=snakemake.params.split.get("stratify_by"),
        seed=snakemake.params.seed,
    )
    with atomic_path(snakemake.output.split) as tmp:
        split.to_csv(tmp, sep="\t", index=False)
