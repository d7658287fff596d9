"""Snakemake script of rule make_folds."""

import pandas as pd

from histodetect.annotations import read_digilut_csv, slide_name_map
from histodetect.io import atomic_path
from histodetect.runner import rule_context
from histodetect.splits import make_folds

with rule_context(snakemake):
    split = pd.read_csv(snakemake.input.split, sep="\t", dtype={"slide_id": str, "patient_id": str})
    boxes = read_digilut_csv(snakemake.input.annotations, slide_name_map(split))
    train = split[split.split == "train"].reset_index(drop=True)
    folds = make_folds(
        train, set(boxes.slide_id), k=snakemake.params.folds, seed=snakemake.params.seed
    )
    with atomic_path(snakemake.output[0]) as tmp:
        folds.to_csv(tmp, sep="\t", index=False)
