"""The workflow through a real single-node SLURM (Debian packages), compared with a local run.

Needs root: the fixture installs ``slurmctld slurmd slurm-client munge`` when missing, writes
``/etc/slurm/slurm.conf`` and starts munged, slurmctld and slurmd with
``tests/integration/slurm/start.sh``; it stops exactly those daemons at the end. docs/cluster.md
shows the same steps by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _workflow import REPO, SMALL_CONFIG, snakemake_cmd, write_config

pytestmark = pytest.mark.integration

SLURM_SCRIPTS = Path(__file__).resolve().parent / "slurm"
PROFILE = REPO / "profiles" / "slurm_cluster"
# Run in the Snakemake process itself (localrules in workflow/rules/*.smk); `all` has no job.
LOCAL_RULES = {"split_patients", "make_folds", "tiling_summary", "oof_threshold", "fold_summary"}
LOCAL_RULES |= {"calibrate_fold"}
LOCAL_RULES |= {"index_annotations", "report_description", "all"}
GROUPED_RULES = {"tile_slide", "label_tiles", "infer_slide", "boxes_from_heatmap"}
RUN_TIMEOUT_S = 900
JOB_BLOCK = re.compile(r"^\s*(local)?(?:rule|checkpoint) (\w+):\n((?:[ \t]+\S.*\n)*)", re.M)
# Timings differ between runs; every other number in a fold's metrics.json must agree.
TIMING_KEYS = {"train_img_s", "data_wait"}
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", re.M)


def jobs_in(log: str, local: bool | None = None) -> set[tuple[str, str]]:
    """(rule, wildcards) of the jobs a Snakemake log announces (only local or remote ones)."""
    jobs = set()
    for m in JOB_BLOCK.finditer(log):
        if local is None or bool(m.group(1)) == local:
            wildcards = re.search(r"wildcards: (.*)", m.group(3))
            jobs.add((m.group(2), wildcards.group(1) if wildcards else ""))
    return jobs


def _slurm_cmd(*args: str, timeout: float = 30) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running single-node SLURM; its state folder (logs under ``log/``)."""
    if os.geteuid() != 0:
        pytest.fail(
            "test_slurm needs root to install and start SLURM (CI runs as root); "
            "as a user, follow docs/cluster.md on a machine where you are root"
        )
    state = tmp_path_factory.mktemp("slurm_state")
    try:
        start = subprocess.run(
            ["bash", str(SLURM_SCRIPTS / "start.sh"), str(state)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if start.returncode != 0:
            logs = "\n".join(p.read_text()[-2000:] for p in sorted((state / "log").glob("*.log")))
            raise AssertionError(
                f"could not start SLURM:\n{start.stdout}\n{start.stderr}\n{logs}".strip()
            )
        yield state
    finally:
        subprocess.run(
            ["bash", str(SLURM_SCRIPTS / "stop.sh"), str(state)],
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster: Path, module_dir: Callable[[str], Path]) -> tuple[Path, str]:
    """The small cohort run with ``--executor slurm`` and the SLURM profile: (workdir, output)."""
    workdir = module_dir("slurm_run")
    write_config(workdir, SMALL_CONFIG)
    cmd = snakemake_cmd(
        workdir,
        "--executor",
        "slurm",
        "--retries",
        "0",  # a failure here is a bug, not a memory shortfall
        "--slurm-status-command",
        "squeue",  # no accounting daemon: no sacct history
        "--slurm-no-account",
        "--slurm-keep-successful-logs",
        "--slurm-init-seconds-before-status-checks",
        "5",
        profile=str(PROFILE),
    )
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=workdir, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as err:
        queue = _slurm_cmd("squeue", "--states=all", "-o", "%i %j %T %M %R")
        jobs = _slurm_cmd("squeue", "-h", "-o", "%i").split()
        if jobs:
            subprocess.run(["scancel", *jobs], timeout=30, check=False)
        out = (err.stdout or b"")[-4000:]
        raise AssertionError(
            f"snakemake --executor slurm did not finish in {RUN_TIMEOUT_S} s; queue:\n{queue}\n"
            f"{out.decode() if isinstance(out, bytes) else out}"
        ) from err
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        ctld = (slurm_cluster / "log" / "slurmctld.log").read_text()[-2000:]
        raise AssertionError(
            f"snakemake --executor slurm failed:\n{output[-8000:]}\nslurmctld.log:\n{ctld}"
        )
    return workdir, output


def test_every_job_ran_through_slurm(slurm_run: tuple[Path, str]) -> None:
    output = slurm_run[1]
    submitted = SUBMITTED.findall(output)
    assert submitted, "no job was submitted to SLURM"
    # Every submitted job finished on SLURM (squeue keeps finished jobs for MinJobAge).
    ids = [job_id for job_id, _ in submitted]
    states = dict(
        line.split()
        for line in _slurm_cmd("squeue", "--states=all", "-h", "-j", ",".join(ids), "-o", "%i %T")
        .strip()
        .splitlines()
    )
    assert states == dict.fromkeys(ids, "COMPLETED"), states
    # Each SLURM job's log names the jobs it ran; together they are every non-local job.
    ran_on_slurm: set[tuple[str, str]] = set()
    for _, log in submitted:
        text = Path(log).read_text()
        assert "Finished jobid" in text and "Error in rule" not in text, log
        ran_on_slurm |= jobs_in(text)
    in_main = {rule for rule, _ in jobs_in(output, local=True)}
    assert in_main <= LOCAL_RULES, f"ran outside SLURM: {in_main - LOCAL_RULES}"
    missing = jobs_in(output, local=False) - ran_on_slurm
    assert not missing, f"submitted jobs that no SLURM log shows running: {sorted(missing)}"
    ran_rules = {rule for rule, _ in ran_on_slurm}
    assert {"train_fold", "undersample", "evaluate", *GROUPED_RULES} <= ran_rules
    # One SLURM job per training fold, each with one GPU; per-slide rules ride in groups.
    train = [log for _, log in submitted if "/rule_train_fold/" in log]
    assert len(train) == SMALL_CONFIG["folds"]
    n_slides = SMALL_CONFIG["demo"]["n_slides"]
    slide_jobs = [(r, w) for r, w in ran_on_slurm if r in {"tile_slide", "label_tiles"}]
    assert len(slide_jobs) == 2 * n_slides
    assert sum("/group_" in log for _, log in submitted) < n_slides
    for job_id, log in submitted:
        if "/rule_train_fold/" in log or "/group_detect" in log:
            info = _slurm_cmd("scontrol", "show", "job", job_id)
            assert "gres:gpu:1" in info, f"SLURM job {job_id} ({log}) asked for no GPU"


def test_slurm_outputs_match_a_local_run(slurm_run: tuple[Path, str], small_run: Path) -> None:
    slurm = slurm_run[0] / "results"
    local = small_run / "results"
    for table in ("splits/split.tsv", "splits/folds.tsv"):
        assert (slurm / table).read_text() == (local / table).read_text(), table
    slides = sorted(p.stem for p in (local / "tiles").glob("*.parquet"))
    assert slides == sorted(p.stem for p in (slurm / "tiles").glob("*.parquet"))
    for slide in slides:
        for stage in ("tiles", "labels"):
            pd.testing.assert_frame_equal(
                pd.read_parquet(slurm / stage / f"{slide}.parquet"),
                pd.read_parquet(local / stage / f"{slide}.parquet"),
                obj=f"{stage}/{slide}.parquet",
            )
    for fold in range(SMALL_CONFIG["folds"]):
        ours = json.loads((slurm / "models" / f"fold_{fold}" / "metrics.json").read_text())
        theirs = json.loads((local / "models" / f"fold_{fold}" / "metrics.json").read_text())
        for key, value in theirs.items():
            if isinstance(value, float) and key not in TIMING_KEYS:
                assert ours[key] == pytest.approx(value, abs=1e-4), f"fold {fold} {key}"
    heatmaps = sorted(p.name for p in (local / "heatmaps").glob("*.npz"))
    assert heatmaps and heatmaps == sorted(p.name for p in (slurm / "heatmaps").glob("*.npz"))
    for name in heatmaps:
        with np.load(slurm / "heatmaps" / name) as a, np.load(local / "heatmaps" / name) as b:
            assert sorted(a.files) == sorted(b.files), name
            for key in b.files:
                if np.issubdtype(b[key].dtype, np.number):
                    np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=f"{name} {key}")
    ours = json.loads((slurm / "metrics" / "detection.json").read_text())
    theirs = json.loads((local / "metrics" / "detection.json").read_text())
    for key in ("n_slides", "mean_f2", "ap50", "froc_mean"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-3), key
