import json
import re
from pathlib import Path

import pandas as pd
from snakemake.utils import min_version, validate

from histodetect.synthetic import plan_cohort

min_version("9.0")


validate(config, "../schemas/config.schema.yaml")

DEMO = config["demo"]["enabled"]
if DEMO:
    SAMPLE_SHEET = "results/demo/samples.tsv"
    ANNOTATIONS = "results/demo/annotations.csv"
    samples = pd.DataFrame(
        [
            (s.slide_id, s.patient_id, f"results/demo/slides/{s.slide_id}.tiff")
            for s in plan_cohort(
                **{k: v for k, v in config["demo"].items() if k != "enabled"}
            )
        ],
        columns=["slide_id", "patient_id", "path"],
    )
else:
    SAMPLE_SHEET = config["samples"]
    ANNOTATIONS = config["annotations"]
    samples = pd.read_csv(
        SAMPLE_SHEET, sep="\t", dtype={"slide_id": str, "patient_id": str}
    )
validate(samples, "../schemas/samples.schema.yaml")
_dupes = samples.slide_id[samples.slide_id.duplicated()].unique()
if len(_dupes):
    raise ValueError(f"{SAMPLE_SHEET}: duplicate slide_id(s) {', '.join(_dupes)}")
samples = samples.set_index("slide_id", drop=False)
SLIDES = list(samples.slide_id)
FOLDS = list(range(config["folds"]))


wildcard_constraints:
    slide="|".join(map(re.escape, SLIDES)),
    fold=r"\d+",


def slide_path(wildcards):
    return samples.loc[wildcards.slide, "path"]


def slide_mpp_override(wildcards):
    if "mpp" not in samples.columns or pd.isna(samples.loc[wildcards.slide, "mpp"]):
        return None
    return float(samples.loc[wildcards.slide, "mpp"])


def fold_models(wildcards=None):
    return expand("results/models/fold_{fold}/model.pt", fold=FOLDS)


def test_slides():
    """Slides of the held-out patients (known once split_patients has run)."""
    split = pd.read_csv(
        checkpoints.split_patients.get().output.split, sep="\t", dtype=str
    )
    return list(split.loc[split.split == "test", "slide_id"])


def test_outputs(pattern):
    def inner(wildcards):
        return expand(pattern, slide=test_slides())

    return inner


def print_detection_summary():
    path = Path("results/metrics/detection.json")
    if path.exists():
        m = json.loads(path.read_text())
        print(
            f"histodetect: mean F2 at GIoU > {config['evaluate']['giou']} over "
            f"{m['n_slides']} test slides = {m['mean_f2']:.3f} "
            f"(AP50 {m['ap50']:.3f}, FROC {m['froc_mean']:.3f}, patch AUC {m['patch']['auc']:.3f})"
        )
