"""Killed and interrupted jobs: reruns resume or redo them, and never take a partial file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
from _workflow import snakemake_cmd

from histodetect.detection.heatmap import Heatmap

TRIGGERS = ("--rerun-triggers", "mtime", "params", "input", "software-env")


def start(workdir: Path, *args: str) -> subprocess.Popen[str]:
    """Snakemake in its own process group, so a signal reaches it and its jobs."""
    cmd = snakemake_cmd(workdir, *TRIGGERS, *args)
    return subprocess.Popen(
        cmd,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, what: str, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def finish(proc: subprocess.Popen[str], timeout: float = 600.0) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def test_sigkilled_training_resumes_from_its_last_checkpoint(run_copy: Path) -> None:
    fold_dir = run_copy / "results" / "models" / "fold_0"
    last = fold_dir / "last.pt"
    last.unlink()
    proc = start(run_copy, "-f", "results/models/fold_0/model.pt")

    def after_first_epoch() -> bool:
        return last.exists() and torch.load(last, weights_only=False)["epoch"] >= 0

    wait_for(after_first_epoch, "fold 0 to checkpoint an epoch")
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and the job, mid-training
    finish(proc)
    assert not (fold_dir / "model.pt").exists()  # nothing that looks finished
    finish(start(run_copy, "--unlock"))  # what a user does after a killed Snakemake
    out = finish(start(run_copy, "--rerun-incomplete", "results/models/fold_0/model.pt"))
    assert "Finished" in out, out[-3000:]
    log = (run_copy / "logs" / "train_fold" / "fold_0.log").read_text()
    assert "resuming from" in log
    assert torch.load(fold_dir / "model.pt", weights_only=False)


def test_ctrl_c_during_inference_leaves_no_output_taken_as_done(run_copy: Path) -> None:
    split = pd.read_csv(run_copy / "results" / "splits" / "split.tsv", sep="\t", dtype=str)
    slide = sorted(split.loc[split.split == "test", "slide_id"])[0]
    heatmap = run_copy / "results" / "heatmaps" / f"{slide}.npz"
    log = run_copy / "logs" / "infer_slide" / f"{slide}.log"
    log.unlink()
    proc = start(run_copy, "-f", f"results/heatmaps/{slide}.npz")
    wait_for(log.exists, "infer_slide to start")
    os.killpg(proc.pid, signal.SIGINT)
    finish(proc)
    leftovers = [p.name for p in heatmap.parent.iterdir() if p.name.startswith(f".{slide}.")]
    assert not leftovers
    # Snakemake removed the interrupted job's outputs; asking for them redoes the job whole,
    # and then the whole workflow has nothing left to do.
    out = finish(start(run_copy, "--rerun-incomplete", f"results/heatmaps/{slide}.npz"))
    assert "Nothing to be done" in finish(start(run_copy, "-n")), out[-3000:]
    loaded = Heatmap.load(heatmap)
    scores = pd.read_parquet(run_copy / "results" / "scores" / f"{slide}.parquet")
    assert (~pd.isna(loaded.prob)).sum() == len(scores)
