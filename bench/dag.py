"""Snakemake's DAG and a no-op rerun against cohort size: 1,000, 3,000 and 10,000 slides.

    .venv/bin/python bench/dag.py                      # about 40 minutes on 2 loaded cores
    .venv/bin/python bench/dag.py --sizes 1000 3000    # quicker
    .venv/bin/python bench/dag.py --profile 3000       # cProfile of each step, top 25 lines

For each N: a sample sheet of N slides, each a hard link to one copy of a real small slide
(``CMU-1-Small-Region.svs``, through :mod:`histodetect.testdata`), one patient per 2 slides, and a DigiLut CSV with one box on every
other slide. Then three steps, each timed as one fresh ``snakemake`` process (wall clock, and
the CPU seconds of that process) with the worktree's default profile:

1. ``fresh``: ``snakemake -n --quiet rules`` on the new sheet. Snakemake plans up to the
   ``split_patients`` checkpoint (tile_slide, label_tiles, ...): the jobs after it are not
   known yet.
2. ``dag``: the same dry run once the cohort is tiled and split (the checkpoint's output is up
   to date): the DAG holds every slide's jobs and plans the jobs after the checkpoint (the
   training slides' ``infer_oof``, the test slides' ``infer_slide`` and
   ``boxes_from_heatmap``). Its time is ``dag_s``.
3. ``noop``: ``snakemake --cores 2`` on the finished cohort: nothing to do (checked).

No slide is tiled and no model trained: the outputs are FAKED. Every output file, log and
benchmark of the workflow is written with a few bytes of placeholder content (``split.tsv``
holds a real patient split, made by the package's ``split_patients``; the tiling summary and
``detection.json`` carry the columns and keys the end-of-run summary reads). Then
``snakemake --touch`` (the touch executor's 0.1 s pause per job set to 0) marks the jobs of one
slide, one training slide's out-of-fold inference, one test slide's and the cohort-wide jobs
done in the DAG's order, and their metadata records and timestamps are copied to the other
slides (:func:`clone_slide`): the timestamps are right and ``.snakemake/metadata`` holds
Snakemake's own records, as after a real run, so the no-op checks every rerun trigger of the
profile. (Touching every job takes about 30 ms a job: an hour at 10,000 slides.)

A fourth timing, ``bare``, is the fresh dry run of a Snakefile with the same two per-slide rules
and plain string inputs only: what Snakemake itself costs per job.

Last line: ``dag_s_10k=<s> noop_s_10k=<s> ms_per_slide_10k=<x> growth=<exponent>``, where the
growth exponent is ``log(dag_s(10k) / dag_s(1k)) / log(10)`` (1 is linear) and ms per slide is
``dag_s / N``. Other sizes than 1,000 and 10,000 give ``growth`` between the smallest and largest.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from histodetect.cohort.splits import split_patients
from histodetect.testdata import path_or_exit

REPO = Path(__file__).resolve().parents[1]
SLIDE = "slides/CMU-1-Small-Region.svs"  # a real file, from histodetect.testdata
ROOT = Path("/tmp/histodetect_bench_dag")
FOLDS = 3
TEST_FRACTION = 0.34
SEED = 42

# The touch run, with the touch executor's pause per job (0.1 s) removed.
TOUCH = (
    "import sys, snakemake.executors.touch as t; t.Executor.SLEEPING_TIME = 0; "
    "from snakemake.cli import main; sys.argv[0] = 'snakemake'; main()"
)

# Many jobs per scheduling round: the touch run takes seconds, not an hour.
TOUCH_ARGS = ("--touch", "--forceall", "--cores", "100000", "--scheduler", "greedy")


# Snakemake's own floor: the same two per-slide rules up to the checkpoint, with plain string
# inputs and nothing else (no input functions, params, resources, reports).
FLOOR = """
SLIDES = [f"S{i:05d}" for i in range(int(config["slides"]))]
wildcard_constraints:
    slide=r"[^/]+",
rule all:
    input: "results/split.tsv", expand("results/labels/{slide}.parquet", slide=SLIDES)
rule tile_slide:
    input: "slides/{slide}.svs"
    output: "results/tiles/{slide}.parquet", "results/tiles/{slide}.json", "results/qc/{slide}.png"
    log: "logs/tile_slide/{slide}.log"
    shell: "touch {output}"
rule label_tiles:
    input: "results/tiles/{slide}.parquet", "results/tiles/{slide}.json", "samples.tsv"
    output: "results/labels/{slide}.parquet"
    log: "logs/label_tiles/{slide}.log"
    shell: "touch {output}"
rule tiling_summary:
    input: expand("results/tiles/{slide}.json", slide=SLIDES)
    output: "results/qc/tiling_summary.tsv"
    shell: "touch {output}"
rule split:
    input: "results/qc/tiling_summary.tsv"
    output: "results/split.tsv"
    shell: "touch {output}"
"""


def make_cohort(workdir: Path, n: int) -> None:
    """Sample sheet, links, DigiLut CSV and config of ``n`` slides in ``workdir``."""
    slides = workdir / "slides"
    slides.mkdir(parents=True)
    ids = [f"S{i:05d}" for i in range(n)]
    # Hard links (distinct paths, one content): the sheet refuses one file listed twice, and a
    # symbolic link would resolve to its target.
    original = shutil.copy(path_or_exit(SLIDE), workdir / "original.svs")
    for s in ids:
        os.link(original, slides / f"{s}.svs")
    pd.DataFrame(
        {
            "slide_id": ids,
            "patient_id": [f"P{i // 2:05d}" for i in range(n)],
            "path": [f"slides/{s}.svs" for s in ids],
        }
    ).to_csv(workdir / "samples.tsv", sep="\t", index=False)
    boxes = pd.DataFrame({"filename": [f"{s}.svs" for s in ids[::2]]})
    boxes = boxes.assign(x1=800, x2=1200, y1=900, y2=1400)
    boxes.to_csv(workdir / "annotations.csv", index=False)
    config = (REPO / "config" / "config.yaml").read_text()
    config = re.sub(r"(?m)^  enabled: true$", "  enabled: false", config, count=1)
    config = config.replace("samples: config/samples.tsv", "samples: samples.tsv")
    config = config.replace("annotations: config/annotations.csv", "annotations: annotations.csv")
    (workdir / "config.yaml").write_text(config)


def _write(path: Path, text: str = "fake\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _per_slide(workdir: Path, slides: list[str], files: list[str]) -> None:
    for pattern in files:
        folder = (workdir / pattern.format(slide="x")).parent
        folder.mkdir(parents=True, exist_ok=True)
        for s in slides:
            (workdir / pattern.format(slide=s)).write_text("fake\n")


PRE = [  # per-slide outputs, logs and benchmarks up to the checkpoint
    "results/tiles/{slide}.parquet",
    "results/tiles/{slide}.json",
    "results/qc/{slide}.png",
    "results/labels/{slide}.parquet",
    "logs/tile_slide/{slide}.log",
    "logs/label_tiles/{slide}.log",
    "benchmarks/tile_slide/{slide}.tsv",
    "benchmarks/label_tiles/{slide}.tsv",
]
OOF = [  # per-training-slide ones after it (out-of-fold scores for tuning the boxes)
    "results/oof/heatmaps/{slide}.npz",
    "results/oof/scores/{slide}.parquet",
    "logs/infer_oof/{slide}.log",
    "benchmarks/infer_oof/{slide}.tsv",
]
POST = [  # per-test-slide ones
    "results/heatmaps/{slide}.npz",
    "results/scores/{slide}.parquet",
    "results/boxes/{slide}.csv",
    "results/boxes/{slide}.geojson",
    "results/overlays/{slide}.png",
    "logs/infer_slide/{slide}.log",
    "logs/boxes_from_heatmap/{slide}.log",
    "benchmarks/infer_slide/{slide}.tsv",
    "benchmarks/boxes_from_heatmap/{slide}.tsv",
]


def fake_until_split(workdir: Path) -> tuple[list[str], list[str]]:
    """Fake the outputs up to the checkpoint; return the test and training slides of a split."""
    sheet = pd.read_csv(workdir / "samples.tsv", sep="\t", dtype=str)
    _per_slide(workdir, list(sheet.slide_id), PRE)
    _write(workdir / "results/annotations/boxes.parquet")
    summary = sheet.assign(status="ok", error="", tiles=34)
    _write(workdir / "results/qc/tiling_summary.tsv", summary.to_csv(sep="\t", index=False))
    positive = set(sheet.slide_id[::2])
    split = split_patients(sheet, positive, test_fraction=TEST_FRACTION, seed=SEED)
    _write(workdir / "results/splits/split.tsv", split.to_csv(sep="\t", index=False))
    for f in ("index_annotations", "tiling_summary", "split_patients"):
        _write(workdir / f"logs/{f}.log")
    return list(split.slide_id[split.split == "test"]), list(split.slide_id[split.split == "train"])


def fake_the_rest(workdir: Path, test: list[str], train: list[str]) -> None:
    """Fake the outputs after the checkpoint."""
    for f in ("results/splits/folds.tsv", "logs/make_folds.log", "logs/fold_summary.log"):
        _write(workdir / f)
    for k in range(FOLDS):
        for f in (
            f"results/folds/fold_{k}/train.parquet",
            f"results/folds/fold_{k}/val.parquet",
            f"results/models/fold_{k}/model.pt",
            f"results/models/fold_{k}/training_metrics.json",
            f"results/models/fold_{k}/metrics.json",
            f"logs/undersample/fold_{k}.log",
            f"logs/train_fold/fold_{k}.log",
            f"benchmarks/train_fold/fold_{k}.tsv",
        ):
            _write(workdir / f)
    for f in ("summary.tsv", "curves.png"):
        _write(workdir / "results/models" / f)
    _write(workdir / "logs/training_curves.log")
    _per_slide(workdir, train, OOF)
    for f in ("boxes.json", "boxes_search.tsv", "slide_score_search.tsv"):
        _write(workdir / "results/tuning" / f)
    _write(workdir / "logs/tune_boxes.log")
    _per_slide(workdir, test, POST)
    metrics = {"n_slides": len(test), "mean_f2": 0.0, "ap50": 0.0, "froc_mean": 0.0}
    _write(
        workdir / "results/metrics/detection.json", json.dumps({**metrics, "patch": {"auc": 0.5}})
    )
    for f in (
        "per_slide.tsv",
        "metrics.tsv",
        "submission.csv",
        "slides.tsv",
        "froc.png",
        "roc.png",
    ):
        _write(workdir / "results/metrics" / f)
    _write(workdir / "logs/evaluate.log")
    for f in ("results/report/workflow.rst", "logs/report_description.log"):
        _write(workdir / f)


def _record(workdir: Path, path: str) -> Path:
    """Snakemake's metadata record of output ``path`` (``persistence/file.py``)."""
    key = base64.urlsafe_b64encode(path.encode()).decode()
    assert len(key) < 255, path  # longer keys are split into folders by Snakemake
    return workdir / ".snakemake" / "metadata" / key


def clone_slide(workdir: Path, template: str, slides: list[str], patterns: list[str]) -> None:
    """Give every slide the records and timestamps that Snakemake wrote for ``template``.

    Slide ids have one width, so replacing the id in a record changes only its paths.
    """
    for pattern in patterns:
        done = workdir / pattern.format(slide=template)
        times = (done.stat().st_atime, done.stat().st_mtime)
        record = _record(workdir, pattern.format(slide=template))
        text = record.read_text() if record.exists() else None  # logs have no record
        for s in slides:
            os.utime(workdir / pattern.format(slide=s), times)
            if text is not None:
                _record(workdir, pattern.format(slide=s)).write_text(text.replace(template, s))


def finish(workdir: Path, snakefile: Path, touch: list[str], test: list[str]) -> None:
    """Fake a finished cohort: records and timestamps as after a real run.

    ``snakemake --touch`` writes Snakemake's own records but takes about 30 ms per job (it
    also hashes every small input), so it marks one slide's jobs (and one test slide's) and
    the cohort-wide jobs; :func:`clone_slide` copies the slide's records to the others.
    """
    slides = list(pd.read_csv(workdir / "samples.tsv", sep="\t", dtype=str).slide_id)
    first, rest = test[0], [s for s in slides if s != test[0]]
    run(
        touch + snakemake_args(workdir, snakefile, *TOUCH_ARGS, f"results/labels/{first}.parquet"),
        workdir,
    )
    clone_slide(workdir, first, rest, PRE)
    run(
        touch
        + snakemake_args(
            workdir, snakefile, "--touch", "-R", "tiling_summary", "results/splits/split.tsv"
        ),
        workdir,
    )


def finish_the_rest(
    workdir: Path, snakefile: Path, touch: list[str], test: list[str], train: list[str]
) -> None:
    """The same after the checkpoint: training, one training slide's out-of-fold scores, the
    box tuning and one test slide's chain, then evaluate and the summaries."""
    run(
        touch
        + snakemake_args(
            workdir,
            snakefile,
            "--touch",
            "-R",
            "make_folds",
            f"results/oof/heatmaps/{train[0]}.npz",
        ),
        workdir,
    )
    clone_slide(workdir, train[0], train[1:], OOF)
    first = test[0]
    run(
        touch
        + snakemake_args(
            workdir, snakefile, "--touch", "-R", "tune_boxes", f"results/boxes/{first}.csv"
        ),
        workdir,
    )
    clone_slide(workdir, first, test[1:], POST)
    run(
        touch
        + snakemake_args(
            workdir,
            snakefile,
            "--touch",
            "-R",
            "evaluate",
            "fold_summary",
            "training_curves",
            "report_description",
        ),
        workdir,
    )


def snakemake_args(workdir: Path, snakefile: Path, *args: str) -> list[str]:
    profile = snakefile.parent / "profiles" / "default"
    return [
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--workflow-profile",
        str(profile) if profile.exists() else "none",
        "--cores",
        "2",
        *args,
    ]


def run(cmd: list[str], cwd: Path, profile_to: Path | None = None) -> tuple[float, float, str]:
    """Run ``cmd`` in a fresh process: (wall s, CPU s of the child, stdout + stderr)."""
    if profile_to is not None:
        cmd = [cmd[0], "-m", "cProfile", "-o", str(profile_to), *cmd[1:]]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return wall, cpu, out


def planned(output: str) -> dict[str, int]:
    """Jobs per rule from the job table of ``snakemake -n --quiet rules``."""
    table = re.search(r"job\s+count\n-+\s+-+\n(.*?)\ntotal\s+\d+", output, re.S)
    if table is None:
        return {}
    return {r: int(c) for r, c in (line.split() for line in table.group(1).splitlines())}


def top(profile: Path, n: int = 25) -> None:
    import pstats

    pstats.Stats(str(profile)).sort_stats("cumulative").print_stats(n)


def bench_size(n: int, root: Path, snakefile: Path, profile: bool) -> dict[str, float]:
    workdir = root / f"n{n}"
    shutil.rmtree(workdir, ignore_errors=True)
    make_cohort(workdir, n)
    smk = [sys.executable, "-m", "snakemake"]
    touch = [sys.executable, "-c", TOUCH]
    dry = ["-n", "--quiet", "rules"]
    prof = {s: (root / f"n{n}_{s}.prof" if profile else None) for s in ("fresh", "dag", "noop")}
    out: dict[str, float] = {}

    out["fresh_s"], out["fresh_cpu_s"], text = run(
        smk + snakemake_args(workdir, snakefile, *dry), workdir, prof["fresh"]
    )
    out["fresh_jobs"] = sum(planned(text).values())
    print(f"  fresh dry run: {out['fresh_s']:.1f} s, plans {planned(text)}", flush=True)
    (workdir / "floor.smk").write_text(FLOOR)
    floor = ["-s", "floor.smk", "-d", str(workdir), "--config", f"slides={n}", "--cores", "2", *dry]
    out["floor_s"], out["floor_cpu_s"], text = run(smk + floor, workdir)
    print(f"  the same dry run of a bare Snakefile: {out['floor_s']:.1f} s, plans {planned(text)}")

    start = time.perf_counter()
    test, train = fake_until_split(workdir)
    finish(workdir, snakefile, touch, test)
    out["dag_s"], out["dag_cpu_s"], text = run(
        smk + snakemake_args(workdir, snakefile, *dry), workdir, prof["dag"]
    )
    jobs = planned(text)
    if jobs.get("infer_slide") != len(test) or jobs.get("infer_oof") != len(train):
        raise SystemExit(
            f"the dry run after the checkpoint plans {jobs}, not {len(test)} test slides "
            f"and {len(train)} training slides"
        )
    print(f"  dry run after the checkpoint: {out['dag_s']:.1f} s, plans {jobs}", flush=True)

    fake_the_rest(workdir, test, train)
    finish_the_rest(workdir, snakefile, touch, test, train)
    print(f"  faked and touched in {time.perf_counter() - start:.0f} s", flush=True)
    out["noop_s"], out["noop_cpu_s"], text = run(
        smk + snakemake_args(workdir, snakefile), workdir, prof["noop"]
    )
    if "Nothing to be done" not in text:
        raise SystemExit(f"the rerun of the finished cohort is not a no-op:\n{text[-3000:]}")
    files = sum(len(f) for _, _, f in os.walk(workdir / "results"))
    meta = sum(len(f) for _, _, f in os.walk(workdir / ".snakemake" / "metadata"))
    logs = sum(len(f) for d in ("logs", "benchmarks") for _, _, f in os.walk(workdir / d))
    out.update(jobs=sum(jobs.values()), files=files, metadata=meta, logs=logs, test=len(test))
    print(
        f"  no-op: {out['noop_s']:.1f} s over {files} result files, {logs} logs and benchmarks, "
        f"{meta} metadata records",
        flush=True,
    )
    if profile:
        for step, path in prof.items():
            print(f"--- cProfile of {step}, N={n}")
            top(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--snakefile", type=Path, default=REPO / "Snakefile")
    parser.add_argument("--profile", type=int, nargs="*", default=[], help="sizes to profile")
    parser.add_argument("--keep", action="store_true", help="keep the cohorts' folders")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)

    results = {}
    for n in args.sizes:
        print(f"N = {n} slides", flush=True)
        results[n] = bench_size(n, args.root, args.snakefile.resolve(), n in args.profile)
        if not args.keep:
            shutil.rmtree(args.root / f"n{n}", ignore_errors=True)

    print(
        "\n| slides | fresh dry run s (bare Snakefile) | dry run after checkpoint s (CPU s) "
        "| ms/slide | jobs planned (fresh, after) | no-op s (CPU s) | files, records |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, r in results.items():
        print(
            f"| {n:,} | {r['fresh_s']:.1f} ({r['floor_s']:.1f}) | {r['dag_s']:.1f} "
            f"({r['dag_cpu_s']:.1f}) | {1000 * r['dag_s'] / n:.2f} | {r['fresh_jobs']:,}, {r['jobs']:,} | "
            f"{r['noop_s']:.1f} ({r['noop_cpu_s']:.1f}) | {r['files'] + r['logs']:,}, "
            f"{r['metadata']:,} |"
        )
    lo, hi = min(results), max(results)
    growth, noop_growth = (
        math.log(results[hi][k] / results[lo][k]) / math.log(hi / lo) if hi > lo else math.nan
        for k in ("dag_s", "noop_s")
    )
    print(f"growth of the no-op {lo:,} -> {hi:,}: {noop_growth:.2f}")
    r = results[hi]
    tag = f"{hi // 1000}k" if hi % 1000 == 0 else str(hi)
    print(
        f"dag_s_{tag}={r['dag_s']:.1f} noop_s_{tag}={r['noop_s']:.1f} "
        f"ms_per_slide_{tag}={1000 * r['dag_s'] / hi:.2f} growth={growth:.2f}"
    )


if __name__ == "__main__":
    main()
