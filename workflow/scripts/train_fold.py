"""Snakemake script of rule train_fold."""

from pathlib import Path

import pandas as pd
import torch

from histodetect.runner import rule_context
from histodetect.training.train import TrainConfig, train_fold

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    fold = snakemake.params.fold
    train_fold(
        pd.read_parquet(snakemake.input.train),
        pd.read_parquet(snakemake.input.val),
        Path(snakemake.output.model).parent,
        TrainConfig.from_dict(dict(snakemake.params.train)),
        fold=fold,
        run_name=f"fold_{fold}",
        mlflow_uri=snakemake.params.mlflow_uri,
        experiment=snakemake.params.experiment,
        tb_dir=Path(snakemake.params.tb_dir),
        tiling=getattr(snakemake.params, "tiling", None),
    )
