"""Snakemake script of rule undersample."""

import pandas as pd

from histodetect.io import atomic_path
from histodetect.runner import rule_context
from histodetect.sampling import fold_tables

with rule_context(snakemake):
    folds = pd.read_csv(snakemake.input.folds, sep="\t", dtype={"slide_id": str, "patient_id": str})
    train, val = fold_tables(
        folds,
        snakemake.input.labels,
        fold=snakemake.params.fold,
        neg_ratio=snakemake.params.sampling["neg_ratio"],
        max_val_tiles=snakemake.params.sampling.get("max_val_tiles"),
        seed=snakemake.params.seed,
    )
    for table, path in ((train, snakemake.output.train), (val, snakemake.output.val)):
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
