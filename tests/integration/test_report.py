"""``snakemake --report`` of a finished run, opened in a real headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from _workflow import snakemake
from PIL import Image

WINDOW = (1400, 1000)


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Headless Debian chromium (setup.sh installs it): no network, no profile, no GPU."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is missing: run setup.sh (it installs Debian's chromium)"
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--virtual-time-budget=10000",  # let the report's scripts draw the page
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


def test_report_opens_on_the_run_s_headline_numbers(run_copy: Path) -> None:
    snakemake(run_copy, "--report", "report.html")
    page = (run_copy / "report.html").as_uri()
    dom = chromium("--dump-dom", page).stdout
    metrics = json.loads((run_copy / "results" / "metrics" / "detection.json").read_text())
    tiling = pd.read_csv(run_copy / "results" / "qc" / "tiling_summary.tsv", sep="\t")
    # What the browser shows first (the workflow page, drawn by the report's scripts) holds
    # the numbers of this run, not only those that the rst file holds.
    assert "histodetect: lesion detection" in dom
    assert "Headline numbers" in dom
    for name, value in [
        ("F2", f"{metrics['mean_f2']:.3f}"),
        ("AP50", f"{metrics['ap50']:.3f}"),
        ("FROC", f"{metrics['froc_mean']:.3f}"),
        ("Tiles", f"{int(tiling.tiles.sum()):,}"),
        ("Slides left out", f"{int((tiling.status != 'ok').sum())} of {len(tiling)}"),
    ]:
        assert f"<td>{name}</td>" in dom and f"<td>{value}</td>" in dom, name
    assert "Slide AUC" in dom

    shot = run_copy / "report.png"
    chromium(f"--screenshot={shot}", page)
    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert image.shape == (WINDOW[1], WINDOW[0])
    # A drawn page, not a blank or a "Loading Snakemake Report..." screen: text and panels
    # over a good share of it.
    dark = image < 128
    assert 0.01 < dark.mean() < 0.6
    assert dark[:, : WINDOW[0] // 2].any() and dark[:, WINDOW[0] // 2 :].any()
