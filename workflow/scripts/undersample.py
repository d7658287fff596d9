"""Snakemake script of rule undersample."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import pandas as pd

from histodetect.cohort.sampling import fold_tables
from histodetect.io import atomic_path
from histodetect.runner import log, rule_context

with rule_context(snakemake):
    sampling = snakemake.params.sampling
    folds = pd.read_csv(snakemake.input.folds, sep="\t", dtype={"slide_id": str, "patient_id": str})
    train, val = fold_tables(
        folds,
        snakemake.input.labels,
        fold=snakemake.params.fold,
        neg_ratio=sampling["neg_ratio"],
        max_val_tiles=sampling.get("max_val_tiles"),
        seed=snakemake.params.seed,
        strategy=sampling.get("strategy", "undersample"),
        hard_first=sampling.get("hard_first", False),
        hard_radius=sampling.get("hard_radius", 1),
    )
    log.info(
        "fold %d: train %s, val %s",
        snakemake.params.fold,
        train.label.value_counts().sort_index().to_dict(),
        val.label.value_counts().sort_index().to_dict(),
    )
    for table, path in ((train, snakemake.output.train), (val, snakemake.output.val)):
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
