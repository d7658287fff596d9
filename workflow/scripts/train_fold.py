"""Snakemake script of rule train_fold (with points.hard_negative_rounds 1: two rounds)."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

from pathlib import Path

import pandas as pd
import torch

from histodetect.cohort.sampling import training_pool
from histodetect.points.hard_negatives import train_with_hard_negatives
from histodetect.runner import rule_context
from histodetect.slides.threads import use_rule_threads
from histodetect.training.train import TrainConfig, train_fold

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    use_rule_threads(snakemake)
    fold = snakemake.params.fold
    train = pd.read_parquet(snakemake.input.train)
    val = pd.read_parquet(snakemake.input.val)
    out_dir = Path(snakemake.output.model).parent
    cfg = TrainConfig.from_dict(dict(snakemake.params.train))
    common = {
        "fold": fold,
        "run_name": f"fold_{fold}",
        "mlflow_uri": snakemake.params.mlflow_uri,
        "experiment": snakemake.params.experiment,
        "tb_dir": Path(snakemake.params.tb_dir),
        "tiling": getattr(snakemake.params, "tiling", None),
    }
    if getattr(snakemake.params, "hard_negative_rounds", 0):
        folds = pd.read_csv(
            snakemake.input.folds, sep="\t", dtype={"slide_id": str, "patient_id": str}
        )
        pool = training_pool(folds, list(snakemake.input.labels), fold=fold)
        train_with_hard_negatives(train, val, pool, out_dir, cfg, **common)
    else:
        train_fold(train, val, out_dir, cfg, **common)
