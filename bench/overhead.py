"""What start-up costs a cohort of many small images: ``snakemake mil`` without and with the
run's preloaded job process (``io.worker``).

    .venv/bin/python bench/overhead.py                 # 160 images: 39 min on 2 cores (34 of them the old way)
    .venv/bin/python bench/overhead.py --slides 60     # quicker

The cohort: ``--slides`` small images (775 x 522 px, like a biopsy cohort's fields), cut at
random tissue positions from two real slides (``CMU-1-Small-Region.svs``, 0.499 um/px, and
``TCGA-CR-7395-01A-01-TS1.svs``, whose file has no mpp: written as 0.5 um/px, a 20x scan),
each written as a small pyramidal TIFF with its mpp; the label is the source slide, ten images
a patient. Both sides run the same ``snakemake --cores 2 mil`` in a fresh folder on the same
files and config: 64 um tiles at 1 um/px (10-24 tiles an image), random-init resnet18
features, ABMIL, 5 folds over patients, everything out of fold (``split.test_fraction: 0``).

- ``before``: ``io.worker: false``: every job starts its own Python and imports torch, timm and
  the package (how every release before this one ran).
- ``after``: ``io.worker: true`` (the default): jobs fork the run's one preloaded process.

Printed per side: each rule's jobs and job-minutes (from Snakemake's log), the
wall time, and ``startup_share`` = 1 - (the rule bodies' own seconds, logged by
``runner.rule_context``) / (the jobs' seconds): the share of job time spent starting Python,
importing and unpickling rather than working. Last line:
``seconds_per_small_slide_before= seconds_per_small_slide= startup_share=`` (the whole ``mil``
run's wall time over its images; startup_share of the new way).

Measured (2026-12-07, 160 images, 2 cores alone): before 33.9 min (12.70 s an image), after 5.4
min (2.03 s), startup_share 0.38; per job and the reading in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import yaml

from histodetect.slides.pyramid_tiff import write_pyramidal_tiff
from histodetect.testdata import path_or_exit

REPO = Path(__file__).resolve().parents[1]
SOURCES = (("slides/CMU-1-Small-Region.svs", 0.499), ("slides/TCGA-CR-7395-01A-01-TS1.svs", 0.5))
SIZE = (775, 522)  # width, height
CONFIG = {
    "demo": {"enabled": False},
    "samples": "samples.tsv",
    "tiling": {"tile_um": 64.0, "target_mpp": 1.0},
    "split": {"test_fraction": 0.0, "stratify_by": None},
    "folds": 5,
    "features": {"source": "timm", "context": "none", "model": "resnet18", "batch_size": 256},
    "mil": {"enabled": True, "bag": "slide", "task": "binary", "model": "abmil", "epochs": 10,
            "bootstrap": 200},
}  # fmt: skip
BODY = re.compile(r"rule body done in ([0-9.]+) s")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) ")


def make_cohort(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` small TIFFs cut at random tissue positions, half from each source slide."""
    rng = np.random.default_rng(seed)
    rows = []
    for source, (name, mpp) in enumerate(SOURCES):
        with openslide.OpenSlide(path_or_exit(name)) as slide:
            rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        count = n // 2 + (n % 2 if source == 0 else 0)
        made = 0
        while made < count:
            x = int(rng.integers(0, rgb.shape[1] - SIZE[0]))
            y = int(rng.integers(0, rgb.shape[0] - SIZE[1]))
            crop = np.ascontiguousarray(rgb[y : y + SIZE[1], x : x + SIZE[0]])
            if (crop.mean(axis=2) < 200).mean() < 0.5:  # mostly background: draw again
                continue
            slide_id = f"S{source}_{made:03d}"
            path = folder / "images" / f"{slide_id}.tiff"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_pyramidal_tiff(path, crop, mpp, tile=256, min_size=512)
            patient = f"P{source}_{made // 10:02d}"
            rows.append({"slide_id": slide_id, "patient_id": patient, "path": str(path),
                         "label": source})  # fmt: skip
            made += 1
    return pd.DataFrame(rows)


def job_seconds(log: Path) -> dict[str, list[float]]:
    """Rule -> each job's seconds from Snakemake's own log: its ``[date]`` line before the job
    is started and before ``Finished jobid`` (whole seconds, so each job's figure is off by up
    to a second either way, unbiased)."""
    started: dict[str, tuple[str, float]] = {}
    per_rule: dict[str, list[float]] = {}
    stamp, rule = 0.0, ""
    for line in log.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            stamp = time.mktime(time.strptime(line[1:-1], "%a %b %d %H:%M:%S %Y"))
        elif m := START.match(line):
            rule = m.group(1)
        elif (m := JOBID.match(line)) and rule:
            started[m.group(1)], rule = (rule, stamp), ""
        elif (m := FINISHED.match(line)) and m.group(1) in started:
            name, began = started.pop(m.group(1))
            per_rule.setdefault(name, []).append(stamp - began)
    return per_rule


def run_side(cohort: Path, folder: Path, worker: bool) -> dict[str, object]:
    """One fresh ``snakemake --cores 2 mil`` on the cohort; its wall time and job figures."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(cohort / "samples.tsv", folder / "samples.tsv")
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key, value in {**CONFIG, "io": {"threads": None, "worker": worker}}.items():
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
    (folder / "config.yaml").write_text(yaml.safe_dump(base))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
               "--workflow-profile", "none", "--cores", "2", "mil"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"snakemake mil failed in {folder}:\n{done.stderr[-3000:]}")
    per_rule = job_seconds(next((folder / ".snakemake" / "log").glob("*.snakemake.log")))
    logs = (folder / "logs").rglob("*.log")
    body = sum(float(m) for log in logs for m in BODY.findall(log.read_text()))
    jobs = sum(sum(v) for v in per_rule.values())
    return {"wall": wall, "per_rule": per_rule, "job_s": jobs, "body_s": body}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=160)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/overhead_bench"))
    args = parser.parse_args()
    cohort = args.workdir / "cohort"
    shutil.rmtree(cohort, ignore_errors=True)
    sheet = make_cohort(cohort, args.slides)
    sheet.to_csv(cohort / "samples.tsv", sep="\t", index=False)
    print(
        f"cohort: {len(sheet)} images of {sheet.patient_id.nunique()} patients, {SIZE[0]}x{SIZE[1]} px"
    )
    results = {}
    for side, worker in (("before", False), ("after", True)):
        res = run_side(cohort, args.workdir / side, worker)
        results[side] = res
        share = 1 - res["body_s"] / res["job_s"]
        print(f"{side}: wall {res['wall'] / 60:.1f} min, {res['wall'] / len(sheet):.2f} s an image, "
              f"job-minutes {res['job_s'] / 60:.1f}, rule bodies {res['body_s'] / 60:.1f}, startup_share {share:.2f}")  # fmt: skip
        for rule, seconds in sorted(res["per_rule"].items(), key=lambda kv: -sum(kv[1])):
            print(f"  {rule:<22} {len(seconds):>4} jobs {sum(seconds) / 60:7.2f} job-min "
                  f"{np.mean(seconds):6.2f} s a job")  # fmt: skip
    before, after = results["before"], results["after"]
    print(
        f"seconds_per_small_slide_before={before['wall'] / len(sheet):.2f} "
        f"seconds_per_small_slide={after['wall'] / len(sheet):.2f} "
        f"startup_share={1 - after['body_s'] / after['job_s']:.2f}"
    )


if __name__ == "__main__":
    main()
