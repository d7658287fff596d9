"""Running the workflow with Snakemake's command line in a scratch folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# Small enough for two CPU cores: 8 slides of 4 patients; 1 test patient, 3 training
# patients in 2 folds.
SMALL_CONFIG = {
    "demo": {
        "enabled": True,
        "n_slides": 8,
        "n_patients": 4,
        "width": 3072,
        "height": 3072,
        "mpp": 0.5,
        "negative_slides": 1,
        "lesions_per_slide": [1, 2],
        "lesion_size_um": [400, 600],
        "seed": 3,
        "lesion_contrast": [1.0, 1.0],  # the classic cohort: the floors of test_workflow hold
        "mimics_per_slide": 0,
    },
    "split": {"test_fraction": 0.25},
    "folds": 2,
    "train": {"epochs": 2, "batch_size": 32},
}


def snakemake_cmd(workdir: Path, *args: str, profile: str = "none") -> list[str]:
    """The command line of ``snakemake`` on the repository's Snakefile inside ``workdir``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--workflow-profile",
        profile,
        "--cores",
        "2",
        *args,
    ]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``snakemake`` on the repository's Snakefile inside ``workdir``."""
    cmd = snakemake_cmd(workdir, *args)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def write_config(workdir: Path, overrides: dict) -> Path:
    """Merge ``overrides`` into the repository's config and write it into ``workdir``."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def planned_jobs(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table Snakemake prints."""
    jobs: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                jobs[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                break
    return jobs
