"""Snakemake script of rule pretrain_encoder."""

from histodetect.worker import hand_to_worker

hand_to_worker(snakemake)

import json
from pathlib import Path

import pandas as pd
import torch

from histodetect.cohort.splits import training_split
from histodetect.features.pretrain import SSLConfig, pretrain_encoder
from histodetect.runner import rule_context
from histodetect.slides.threads import use_rule_threads

with rule_context(snakemake):
    torch.set_num_threads(snakemake.threads)
    use_rule_threads(snakemake)
    paths = {
        str(s["slide_id"]): s["path"]
        for s in (json.loads(Path(p).read_text()) for p in snakemake.input.summaries)
    }
    tables = [pd.read_parquet(p) for p in snakemake.input.tiles]
    tiles = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    tiles = tiles.assign(path=tiles["slide_id"].astype(str).map(paths))
    pretrain_encoder(
        tiles,
        training_split([pd.read_csv(p, sep="\t", dtype=str) for p in snakemake.input.split]),
        Path(snakemake.output.encoder).parent,
        SSLConfig.from_dict(dict(snakemake.params.ssl)),
        source="results/tiles",
        mlflow_uri=snakemake.params.mlflow_uri,
        experiment=snakemake.params.experiment,
        tb_dir=Path(snakemake.params.tb_dir),
        tiling=snakemake.params.tiling,
    )
