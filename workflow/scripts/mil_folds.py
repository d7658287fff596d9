"""Snakemake script of checkpoint mil_folds: the bag split and folds, slides that did not
tile left out (split ``excluded``)."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import pandas as pd

from histodetect.cohort.bags import bag_folds, bag_table, split_bags
from histodetect.io import atomic_path
from histodetect.runner import rule_context

with rule_context(snakemake):
    source = snakemake.input.sheet
    ids = dict.fromkeys(("slide_id", "patient_id", "label"), str)  # checked when the run began
    table = bag_table(pd.read_csv(source, sep="\t", dtype=ids), snakemake.params.mil, source)
    tiling = pd.read_csv(snakemake.input.tiling, sep="\t", dtype={"slide_id": str})
    ok = table.slide_id.isin(set(tiling.slide_id[tiling.status == "ok"]))
    split = split_bags(
        table[ok], test_fraction=snakemake.params.split["test_fraction"],
        seed=snakemake.params.seed, source=source,
    )  # fmt: skip
    folds = bag_folds(split, k=snakemake.params.folds, seed=snakemake.params.seed, source=source)
    excluded = table[~ok].assign(split="excluded", fold=-1)
    with atomic_path(snakemake.output[0]) as tmp:
        pd.concat([folds, excluded]).to_csv(tmp, sep="\t", index=False)
