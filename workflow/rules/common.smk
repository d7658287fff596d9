import json
import os
import sys
from glob import glob
from pathlib import Path

import pandas as pd
from snakemake.utils import min_version, validate

from histodetect.cohort.bags import bag_table, predict_bag_ids
from histodetect.config.validation import (
    check_config,
    merge_config,
    read_sample_sheet,
    typed_overrides,
)
from histodetect.errors import InputError
from histodetect.features.settings import (
    encoder_id,
    encoder_record,
    file_sha256,
    resolve_source,
    settings_hash,
    spec_from_config,
    tile_settings,
)
from histodetect.features.store import import_paths
from histodetect.slides.graded import plan_demo

min_version("9.0")


SAMPLES_SCHEMA = workflow.source_path("../schemas/samples.schema.yaml")
# --config mil='{enabled: true, model: mean}' arrives with its inner values as strings
# ('true'); typed as the config file's values are, merged key by key into the defaults.
CONFIG_OVERRIDES = workflow.config_settings.overwrite_config or {}
merge_config(config, typed_overrides(CONFIG_OVERRIDES))
CONFIG_SOURCE = (
    " + ".join(
        [*map(str, workflow.configfiles), *(["--config"] if CONFIG_OVERRIDES else [])]
    )
    or "config"
)
check_config(
    config, workflow.source_path("../schemas/config.schema.yaml"), CONFIG_SOURCE
)
validate(config, "../schemas/config.schema.yaml")  # fills in the schema's defaults

PATCH_LABELS = config.get("patches", {}).get("labels")  # patch mode: rules/cohort.smk
DEMO = config["demo"]["enabled"] and not PATCH_LABELS
if DEMO:
    SAMPLE_SHEET = "results/demo/samples.tsv"
    ANNOTATIONS = "results/demo/annotations.csv"
    samples = pd.DataFrame(
        [
            (
                s.slide_id,
                s.patient_id,
                f"results/demo/slides/{s.slide_id}.tiff",
                s.n_lesions if config["demo"]["graded"] else None,
            )
            for s in plan_demo(config["demo"])
        ],
        columns=["slide_id", "patient_id", "path", "label"],
    )
elif PATCH_LABELS:
    SAMPLE_SHEET = ANNOTATIONS = PATCH_LABELS
    samples = pd.DataFrame(columns=["slide_id", "patient_id", "path"], dtype=str)
else:
    SAMPLE_SHEET = config["samples"]
    ANNOTATIONS = config["annotations"]
    samples = read_sample_sheet(
        SAMPLE_SHEET, SAMPLES_SCHEMA
    )  # checked against the schema
samples = samples.set_index("slide_id", drop=False)
BOX_INDEX = "results/annotations/boxes.parquet"  # the DigiLut CSV's boxes by slide
SLIDES = list(samples.slide_id)
FOLDS = list(range(config["folds"]))
# A second training round on each fold's false positives (slide mode only).
HARD_NEGATIVE_ROUNDS = 0 if PATCH_LABELS else config["points"]["hard_negative_rounds"]
# Each slide's sheet row, looked up once per job in O(1) (a pandas lookup costs ~0.1 ms a job).
SHEET_ROWS = {
    row["slide_id"]: {
        k: v for k, v in row.items() if not (isinstance(v, float) and pd.isna(v))
    }
    for row in samples.to_dict("records")
}

# Slide and patient labels (rules/mil.smk): checked before any job runs, one line naming the
# sheet, the row and the value.
MIL = config["mil"]
if MIL["model"] == "transformer" and MIL["hidden"] % MIL["transformer_heads"]:
    raise InputError(
        CONFIG_SOURCE,
        f"mil.hidden ({MIL['hidden']}) must be a multiple of mil.transformer_heads "
        f"({MIL['transformer_heads']})",
    )
MIL_BAGS = bag_table(samples, MIL, SAMPLE_SHEET) if MIL["enabled"] else None

# New slides to predict on (target predict), from their own sheet, without annotations.
PREDICT = config["predict"]
PREDICT_SHEET = PREDICT["samples"]
if PREDICT_SHEET:
    predict_samples = read_sample_sheet(
        PREDICT_SHEET, workflow.source_path("../schemas/predict_samples.schema.yaml")
    ).set_index("slide_id", drop=False)
else:
    predict_samples = pd.DataFrame(columns=["slide_id", "path"], dtype=str)
PREDICT_SLIDES = list(predict_samples.slide_id)
if PREDICT_SHEET and MIL["enabled"]:  # the bag column of mil.bag, or one line
    predict_bag_ids(predict_samples, MIL["bag"], PREDICT_SHEET)


# The slide wildcard is any file name; which ids exist is checked by sheet_row (one clear
# error). An alternation of every slide id here is scanned for every job: DAG time grows with
# slides squared (docs/scaling.md).
wildcard_constraints:
    slide=r"[^/]+",
    fold=r"\d+",


def sheet_row(slide):
    """The sample sheet's row of ``slide`` (empty values left out), or one clear error."""
    try:
        return SHEET_ROWS[slide]
    except KeyError:
        raise InputError(
            SAMPLE_SHEET, f"slide {slide!r} is not in the sample sheet"
        ) from None


def slide_file(wildcards):
    return sheet_row(wildcards.slide)["path"]


def slide_path(wildcards):
    """The slide file as an input, when it exists.

    A missing file is not declared, so tile_slide runs and records one clear error for that
    slide instead of Snakemake refusing the whole cohort; once the file appears, the changed
    input set reruns the slide.
    """
    path = slide_file(wildcards)
    return path if DEMO or os.path.exists(path) else []


def slide_mpp_override(wildcards):
    mpp = sheet_row(wildcards.slide).get("mpp")
    return None if mpp is None else float(mpp)


def slide_annotation(wildcards):
    """The slide's own annotation file (sample sheet column `annotation`), if any."""
    path = sheet_row(wildcards.slide).get("annotation")
    return [] if path is None or path == "" else [path]


def all_slide_annotations(wildcards=None):
    """Every per-slide annotation file named in the sample sheet."""
    if "annotation" not in samples.columns:
        return []
    return [p for p in samples["annotation"] if isinstance(p, str) and p]


def fold_models(wildcards=None):
    return expand("results/models/fold_{fold}/model.pt", fold=FOLDS)


def fold_calibrations(wildcards=None):
    return expand("results/models/fold_{fold}/calibration.json", fold=FOLDS)


def predict_calibrations(wildcards=None):
    """calibration.json beside each predict model; one missing is refused by the job, naming it."""
    if not PREDICT["models"]:
        return fold_calibrations()
    beside = [Path(p).parent / "calibration.json" for p in predict_models()]
    return [str(p) for p in beside if p.exists()]


def model_tiling():
    """What a slide-mode model is trained at, recorded in its file (None in patch mode)."""
    if PATCH_LABELS:
        return None
    return {k: config["tiling"][k] for k in ("tile_um", "target_mpp", "target_mag")}


def tuned_boxes(wildcards=None):
    """The out-of-fold tuning record, when boxes.tune is on."""
    return "results/tuning/boxes.json" if config["boxes"]["tune"] else []


def predict_models(wildcards=None):
    """This run's fold models, or those of predict.models (a folder of fold_*/model.pt)."""
    if not PREDICT["models"]:
        return fold_models()
    found = sorted(glob(os.path.join(PREDICT["models"], "fold_*", "model.pt")))
    if not found:
        raise InputError(PREDICT["models"], "predict.models holds no fold_*/model.pt")
    return found


def predict_threshold(wildcards=None):
    """The models' out-of-fold decision: this run's, or threshold.json in predict.models."""
    if not PREDICT["models"]:
        return "results/models/threshold.json"
    beside = Path(PREDICT["models"]) / "threshold.json"
    return str(beside) if beside.exists() else []


def predict_tuning(wildcards=None):
    """The box tuning that predictions use: predict.tuning, or the models' own run's."""
    if PREDICT["tuning"]:
        return PREDICT["tuning"]
    if PREDICT["models"]:
        beside = Path(PREDICT["models"]).parent / "tuning" / "boxes.json"
        return str(beside) if config["boxes"]["tune"] and beside.exists() else []
    return tuned_boxes()


POINTS_MODE = config["labels"]["overlap"] == "point"
# Points mode's outputs (rules/evaluation.smk target points; part of all in points mode).
POINT_TARGETS = [
    "results/metrics/points.json",
    "results/tuning/points.json",
    "results/points/counts.tsv",
]


def predict_point_tuning(wildcards=None):
    """The point tuning new slides use: beside predict.tuning, in predict.models' run, or
    this run's results/tuning/points.json."""
    if PREDICT["tuning"]:
        beside = Path(PREDICT["tuning"]).parent / "points.json"
    elif PREDICT["models"]:
        beside = Path(PREDICT["models"]).parent / "tuning" / "points.json"
    else:
        return "results/tuning/points.json"
    if not beside.exists():
        raise InputError(
            beside,
            "points of new slides need the point tuning of the models' run (rule tune_points) "
            "beside predict.tuning or predict.models",
        )
    return str(beside)


def predict_point_outputs(wildcards):
    """In points mode, the new slides' points and their count table."""
    if not POINTS_MODE:
        return []
    return [
        *predict_outputs("results/predict/points/{slide}.csv")(wildcards),
        "results/predict/points/counts.tsv",
    ]


def predict_sheet_given(wildcards=None):
    """Nothing, once predict.samples names a sheet; otherwise the one line that says so."""
    if not PREDICT_SHEET:
        raise InputError(
            "config",
            "predict.samples is not set: give a sheet of slide_id, path[, mpp, "
            'n_lesions] (--config predict="{samples: new_slides.tsv}")',
        )
    return []


def predict_slide_file(wildcards):
    return predict_samples.loc[wildcards.slide, "path"]


def predict_slide_path(wildcards):
    path = predict_slide_file(wildcards)
    return path if os.path.exists(path) else []


def predict_mpp_override(wildcards):
    if "mpp" not in predict_samples.columns:
        return None
    value = predict_samples.loc[wildcards.slide, "mpp"]
    return None if pd.isna(value) else float(value)


def predict_outputs(pattern):
    """``pattern`` for every slide of the prediction sheet that tiled (after the checkpoint)."""

    def inner(wildcards):
        table = pd.read_csv(
            checkpoints.predict_tiling_summary.get().output[0],
            sep="\t",
            dtype={"slide_id": str},
            keep_default_na=False,
        )
        return expand(pattern, slide=list(table.slide_id[table.status == "ok"]))

    return inner


# The cohort's own encoder (rule pretrain_encoder) and the tile embeddings (rule extract_features).
SSL_ENCODER = "results/encoder/ssl/encoder.pt"


def _hub_error(section, model):
    """Why timm's hub weights of ``model`` cannot be had, asked only when ``section``'s auto
    wants them (torch is imported then), or None."""
    if (
        section["source"] != "auto"
        or not section["pretrained"]
        or section["checkpoint"]
    ):
        return None
    from histodetect.features.encoder import hub_error

    return hub_error(model)


# features.source auto (the default) never starts from random weights: resolved once here.
FEATURE_SOURCE = resolve_source(
    config["features"],
    hub_error=_hub_error(config["features"], config["features"]["model"]),
)
FEATURES = {**config["features"], "source": FEATURE_SOURCE.source}
if (
    FEATURES["context"] == "none"
):  # as before the option: no rerun of finished extractions
    del FEATURES["context"]


def _train_start():
    """train.init resolved: "ssl" or None (the backbone's checkpoint, hub or random weights)
    and why. auto follows features.source auto's rule where the cohort's own encoder was
    measured to help (points mode: MITOS 2012 point F1 0.216 -> 0.364, bench/ssl_encoder.py);
    in box and patch mode it starts from train.checkpoint, hub weights, else random init.
    """
    train = config["train"]
    init = train.get("init")
    if init != "auto":
        return init, f"train.init: {init or 'null'}"
    section = {
        "source": "auto",
        "checkpoint": train.get("checkpoint"),
        "pretrained": train.get("pretrained"),
    }
    points = POINTS_MODE and not PATCH_LABELS
    choice = resolve_source(
        section,
        hub_error=_hub_error(section, train.get("backbone", "resnet18")),
        key="train.init",
    )
    if choice.source != "ssl":
        return None, choice.reason
    if points:
        return "ssl", choice.reason
    mode = "patch" if PATCH_LABELS else "box"
    return (
        None,
        f"random init (train.init auto in {mode} mode; train.init: ssl for the cohort's own encoder)",
    )


TRAIN_INIT, TRAIN_INIT_REASON = _train_start()
# Whose training patients the cohort's own encoder may see: the slide-label folds' when the
# features feed the MIL models, the box stage's split when its fold models start from it
# (train.init: ssl) or when there is no MIL stage; with both, patients training in both.
SSL_SPLITS = {
    **(
        {"mil": "results/mil/folds.tsv"}
        if FEATURES["source"] == "ssl" and MIL["enabled"]
        else {}
    ),
    **(
        {"box": "results/splits/split.tsv"}
        if TRAIN_INIT == "ssl" or (FEATURES["source"] == "ssl" and not MIL["enabled"])
        else {}
    ),
}


def ssl_settings():
    """What the cohort's own encoder depends on: named in feature ids before it exists."""
    ssl = {
        **config["ssl"],
        "model": config["ssl"]["model"] or config["train"]["backbone"],
    }
    settings = {
        "ssl": ssl,
        "seed": config["seed"],
        "split": config["split"],
        "tiling": tile_settings(config["tiling"]),
    }
    if (
        "mil" in SSL_SPLITS
    ):  # the MIL folds' training patients (bags grouped by mil.bag)
        settings |= {"splits": sorted(SSL_SPLITS), "mil_bag": MIL["bag"]}
    return settings


def ssl_train_slides():
    """Slides the cohort's own encoder trains on: training slides of every split in
    SSL_SPLITS (known once those checkpoints have run)."""
    chosen = None
    if "box" in SSL_SPLITS:
        chosen = set(train_slides())
    if "mil" in SSL_SPLITS:
        folds = pd.read_csv(
            checkpoints.mil_folds.get().output[0], sep="\t", dtype={"slide_id": str}
        )
        mil = set(folds.slide_id[folds.split == "train"])
        chosen = mil if chosen is None else chosen & mil
    return sorted(chosen or [])


def ssl_train_outputs(pattern):
    def inner(wildcards):
        return expand(pattern, slide=ssl_train_slides())

    return inner


def print_encoder_choice():
    """Where the tile classifiers start and the slide-label models' features come from."""
    if config["train"].get("init") == "auto" and (POINTS_MODE or not MIL["enabled"]):
        print(
            f"histodetect: tile classifiers start from {TRAIN_INIT_REASON}",
            file=sys.stderr,
        )
    if MIL["enabled"]:
        model = (
            ssl_settings()["ssl"]["model"]
            if FEATURES["source"] == "ssl"
            else FEATURES["model"]
        )
        tuned = (
            "; mil.model topk fine-tunes it from the bag labels"
            if MIL["model"] == "topk"
            else ""
        )
        print(
            f"histodetect: slide-label features from {model}: {FEATURE_SOURCE.reason}{tuned}",
            file=sys.stderr,
        )


def feature_encoder_id():
    """The folder of this config's feature files (see histodetect.features.settings)."""
    if FEATURES["source"] == "import":
        folder = FEATURES["import_dir"]
        if not folder:
            raise InputError(
                "config", "features.source import needs features.import_dir"
            )
        import_paths(
            folder, SLIDES
        )  # every slide of the sheet has its file, or one line
        return f"imported-{settings_hash({'dir': str(Path(folder).resolve())})}"
    features = dict(FEATURES)
    if FEATURES["source"] == "ssl":
        features["model"] = ssl_settings()["ssl"]["model"]
    spec = spec_from_config(features, config["seed"], SSL_ENCODER)
    record = encoder_record(
        spec,
        config["tiling"],
        weights=feature_weights_sha256(),
        ssl_settings=ssl_settings(),
    )
    return encoder_id(spec, record)


def feature_weights_sha256():
    """sha256 of features.checkpoint (hashed once per file version, kept by size and mtime),
    given to the extraction jobs so that none hashes a large weights file again."""
    if FEATURES["source"] not in ("timm", "checkpoint") or not FEATURES["checkpoint"]:
        return None
    return file_sha256(
        FEATURES["checkpoint"], cache="results/features/.weights_sha256.json"
    )


def feature_expectations():
    """What every feature file of this run must record (checked when they are summarised)."""
    if FEATURES["source"] == "import":
        return {"encoder_id": ENCODER_ID}
    return {
        "encoder_id": ENCODER_ID,
        "tile_um": float(config["tiling"]["tile_um"]),
    }


def feature_encoder_input(wildcards=None):
    """The ssl encoder file when the features or the fold models start from it."""
    return SSL_ENCODER if FEATURES["source"] == "ssl" else []


def train_params():
    """train_fold's options: the config's, the seed, and the ssl encoder with init: ssl."""
    train = {**config["train"], "seed": config["seed"], "init": TRAIN_INIT}
    # calibrate_fold's key: changing it retrains nothing
    train.pop("calibration", None)
    if TRAIN_INIT == "ssl":
        train["checkpoint"] = SSL_ENCODER
        train["pretrained"] = False
    return train


def hard_negative_input(paths):
    """paths when train_fold runs a hard-negative round (slide mode), else none."""
    return paths if HARD_NEGATIVE_ROUNDS else []


def train_init_input(wildcards=None):
    return SSL_ENCODER if TRAIN_INIT == "ssl" else []


def test_slides():
    """Slides of the held-out patients (known once split_patients has run)."""
    split = pd.read_csv(
        checkpoints.split_patients.get().output.split, sep="\t", dtype=str
    )
    return list(split.loc[split.split == "test", "slide_id"])


def train_slides():
    """Slides of the training patients, each of one fold (known once split_patients has run)."""
    split = pd.read_csv(
        checkpoints.split_patients.get().output.split, sep="\t", dtype=str
    )
    return list(split.loc[split.split == "train", "slide_id"])


def train_outputs(pattern):
    def inner(wildcards):
        return expand(pattern, slide=train_slides())

    return inner


def test_outputs(pattern):
    def inner(wildcards):
        return expand(pattern, slide=test_slides())

    return inner


REPORT_TEXT = "results/report/workflow.rst"
MIL_REPORT_TEXT = "results/report/mil.rst"


def report_text():
    """The report's workflow page: this run's headline numbers once rule all (detection) or
    rule mil (slide labels only) wrote them."""
    for text in (REPORT_TEXT, MIL_REPORT_TEXT):
        if Path(text).exists():
            return str(Path(text).resolve())
    return "workflow/report/workflow.rst"


def print_run_summary():
    """The run's closing lines: slides left out of the cohort and the detection scores."""
    tiling = Path("results/qc/tiling_summary.tsv")
    if tiling.exists():
        table = pd.read_csv(
            tiling, sep="\t", dtype={"slide_id": str}, keep_default_na=False
        )
        for row in table[table.status != "ok"].itertuples():
            cause = row.error if row.status == "failed" else "no tissue tiles"
            print(f"histodetect: slide {row.slide_id} left out ({row.path}): {cause}")
    path = Path("results/metrics/detection.json")
    if path.exists():
        m = json.loads(path.read_text())
        oof = m.get("oof_mean_f2")
        auc = m.get("slide_auc")
        print(
            f"histodetect: mean F2 at GIoU > {config['evaluate']['giou']} over "
            f"{m['n_slides']} test slides = {m['mean_f2']:.3f}"
            + (
                ""
                if oof is None
                else f" (out of fold on the training slides: {oof:.3f})"
            )
            + f"; AP50 {m['ap50']:.3f}, FROC {m['froc_mean']:.3f}, patch AUC {m['patch']['auc']:.3f}"
            + ("" if auc is None else f", slide AUC {auc:.3f}")
        )


# Slide and patient labels (rules/mil.smk).
MIL_DIR = "results/mil"


def mil_enabled(wildcards=None):
    """Nothing, once mil.enabled is set; otherwise the one line that says so."""
    if not MIL["enabled"]:
        raise InputError(
            "config",
            "mil.enabled is false: set it (with a label column in the sample sheet), e.g. "
            "--configfile config/mil_demo.yaml",
        )
    return []


def mil_slides():
    """Slides of the sheet whose bags the models see (all, with mil enabled)."""
    return list(MIL_BAGS.slide_id) if MIL["enabled"] else []


# The summary-image model (mil.model: concat) and the top-k tile model (topk) read tiles
# from the slides, not features.
MIL_CONCAT = MIL["model"] == "concat"
MIL_TILES = MIL["model"] in ("concat", "topk")
MIL_SCORES_DIR = (
    "results/scores" if MIL_CONCAT and MIL["concat"]["score"] == "detection" else None
)
if MIL["enabled"] and MIL_CONCAT and MIL["concat"]["score"] == "attention":
    raise InputError(
        "config",
        "mil.concat.score: attention needs an attention model trained beside the "
        "summary-image one (a second model per fold); use random or detection",
    )


def mil_tile_inputs(slides):
    """The tile tables (and detection scores) of ``slides``, for mil.model concat or topk."""
    if not MIL_TILES:
        return []
    names = ["results/tiles/{slide}.parquet", "results/tiles/{slide}.json"]
    if MIL_SCORES_DIR:
        names.append(f"{MIL_SCORES_DIR}/{{slide}}.parquet")
    return expand(names, slide=slides)


def mil_topk_encoder():
    """Where mil.model topk's tile encoder starts: where the features' does."""
    if FEATURES["source"] == "import":
        raise InputError(
            CONFIG_SOURCE,
            "mil.model topk fine-tunes a tile encoder: features.source import has none "
            "(use auto, ssl, checkpoint or timm)",
        )
    if FEATURES["source"] == "ssl":
        model = ssl_settings()["ssl"]["model"]
        return {"backbone": model, "checkpoint": SSL_ENCODER, "pretrained": False}
    weights = FEATURES[
        "checkpoint"
    ]  # a local file (source checkpoint, or timm with one)
    return {
        "backbone": FEATURES["model"],
        "checkpoint": weights,
        "pretrained": bool(FEATURES["pretrained"]) and not weights,
    }


def mil_topk_encoder_input(wildcards=None):
    """The cohort's own encoder file, when topk starts from it."""
    return SSL_ENCODER if MIL["model"] == "topk" and FEATURES["source"] == "ssl" else []


def mil_fold_outputs(name):
    return expand(f"{MIL_DIR}/fold_{{fold}}/{name}", fold=FOLDS)


def mil_bag_slides(slide):
    """The slides of ``slide``'s bag (its attention is shared within the bag)."""
    bags = MIL_BAGS.set_index("slide_id").bag_id
    if slide not in bags.index:
        raise InputError(SAMPLE_SHEET, f"slide {slide!r} is not in the sample sheet")
    return list(bags.index[bags == bags[slide]])


def mil_attention_maps(wildcards):
    """Attention maps of every slide that tiled (known once mil_folds has run)."""
    folds = pd.read_csv(
        checkpoints.mil_folds.get().output[0], sep="\t", dtype={"slide_id": str}
    )
    used = folds.slide_id[folds.split != "excluded"]
    return expand(
        f"{MIL_DIR}/attention/{{slide}}.{{ext}}", slide=used, ext=["geojson", "png"]
    )


def mil_top_tile_slides():
    """Slides of the bags the top-tiles picture shows (known once mil_folds has run): the
    labelled test bags that tiled, or the labelled training bags where there are none
    (split.test_fraction: 0, every bag out of fold)."""
    folds = pd.read_csv(
        checkpoints.mil_folds.get().output[0],
        sep="\t",
        dtype={"slide_id": str, "label": str},
        keep_default_na=False,
    )
    labelled = folds[folds.label != ""]
    test = labelled.slide_id[labelled.split == "test"]
    return list(test if len(test) else labelled.slide_id[labelled.split == "train"])


def mil_top_tile_slide_files():
    """The files of :func:`mil_top_tile_slides` that exist (the demo's: its rule's outputs)."""
    return [
        path
        for path in (sheet_row(s)["path"] for s in mil_top_tile_slides())
        if DEMO or os.path.exists(path)
    ]


def print_mil_summary():
    """Bags left out (none of their slides tiled), then the slide-label models' closing line."""
    path, folds = Path(f"{MIL_DIR}/metrics.json"), Path(f"{MIL_DIR}/folds.tsv")
    if not MIL["enabled"] or not path.exists():
        return
    table = pd.read_csv(folds, sep="\t", dtype=str, keep_default_na=False)
    used = table.groupby("bag_id").split.agg(lambda s: (s != "excluded").any())
    for bag in used.index[~used]:
        print(f"histodetect: bag {bag} left out: none of its slides tiled")
    m = json.loads(path.read_text())

    def fmt(key):
        value = m.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    qwk = m["task"] == "ordinal"
    print(
        f"histodetect: {m['model']} over {m['n_test_bags']} test bags: AUC {fmt('auc')}, "
        f"balanced accuracy {fmt('balanced_accuracy')}"
        + (f", QWK {fmt('qwk')}" if qwk else "")
        + f" (out of fold over {m['n_oof_bags']} training bags: AUC {fmt('oof_auc')}, "
        f"balanced accuracy {fmt('oof_balanced_accuracy')}"
        + (f", QWK {fmt('oof_qwk')})" if qwk else ")")
    )


# Slide-label models on new slides (rules/mil.smk, target predict with mil.enabled).
PREDICT_MIL_BAGS = "results/predict/mil/bags.tsv"


def mil_predict_ready(wildcards=None):
    """Nothing, when the slide-label models can predict; otherwise the one line that says why."""
    predict_sheet_given()
    if FEATURES["source"] == "import":
        raise InputError(
            "config",
            "predict with mil extracts the new slides' features itself: features.source "
            "import has no encoder to run on them",
        )
    if MIL_SCORES_DIR:
        raise InputError(
            "config",
            "predict with mil.model concat and mil.concat.score: detection is not built yet "
            "(the new slides would need the box models' tile scores): use score random",
        )
    return []


def mil_predict_models(wildcards=None):
    """This run's MIL fold models, or those of predict.models (an earlier run's results/mil)."""
    if not PREDICT["models"]:
        return mil_fold_outputs("model.pt")
    found = sorted(glob(os.path.join(PREDICT["models"], "fold_*", "model.pt")))
    if not found:
        raise InputError(PREDICT["models"], "predict.models holds no fold_*/model.pt")
    return found


def mil_predict_decision(wildcards=None):
    """The MIL models' out-of-fold decision (decision.json beside them), checked against this
    config's features and mil.bag before any job runs."""
    if not PREDICT["models"]:
        return f"{MIL_DIR}/decision.json"
    path = Path(PREDICT["models"]) / "decision.json"
    if not path.exists():
        raise InputError(
            PREDICT["models"],
            "no decision.json beside the fold models: run target mil of that run again "
            "(it writes the out-of-fold decision there)",
        )
    record = json.loads(path.read_text())
    if record.get("encoder_id") != ENCODER_ID:
        raise InputError(
            path,
            f"the models were trained on features {record.get('encoder_id')} but this "
            f"config extracts {ENCODER_ID}: set the features section as in their run",
        )
    if record.get("bag") != MIL["bag"]:
        raise InputError(
            path,
            f"the models were trained on bags by {record.get('bag')} but mil.bag is "
            f"{MIL['bag']}",
        )
    return str(path)


def mil_predict_bag_slides(slide):
    """The slides of ``slide``'s prediction bag that tiled and extracted (after predict_mil)."""
    bags = pd.read_csv(
        checkpoints.predict_mil.get().output.bags,
        sep="\t",
        dtype=str,
        keep_default_na=False,
    )
    used = bags[bags.split == "predict"]
    bag = used.bag_id[used.slide_id == slide]
    if bag.empty:
        raise InputError(PREDICT_MIL_BAGS, f"slide {slide!r} is in no scored bag")
    return list(used.slide_id[used.bag_id == bag.iloc[0]])


def predict_targets(wildcards):
    """What target predict makes: the slide-label models' answers and attention maps with
    mil.enabled, the box models' slide table and submission otherwise."""
    if not MIL["enabled"]:
        return ["results/predict/slides.tsv", "results/predict/submission.csv"]
    bags = pd.read_csv(
        checkpoints.predict_mil.get().output.bags,
        sep="\t",
        dtype=str,
        keep_default_na=False,
    )
    used = bags.slide_id[bags.split == "predict"]
    return [PREDICT_MIL_BAGS.replace("bags.tsv", "predictions.tsv")] + expand(
        "results/predict/mil/attention/{slide}.{ext}",
        slide=used,
        ext=["geojson", "png"],
    )


def print_mil_predict_summary():
    """After a predict run with mil: the new slides and bags left out, then one closing line."""
    bags_path = Path(PREDICT_MIL_BAGS)
    out = bags_path.with_name("predictions.tsv")
    if not (MIL["enabled"] and PREDICT_SHEET and bags_path.exists() and out.exists()):
        return
    bags = pd.read_csv(bags_path, sep="\t", dtype=str, keep_default_na=False)
    for row in bags[bags.split == "excluded"].itertuples():
        print(f"histodetect: new slide {row.slide_id} left out: {row.error}")
    used = bags.groupby("bag_id", sort=False).split.agg(
        lambda s: (s == "predict").any()
    )
    for bag in used.index[~used]:
        print(
            f"histodetect: new bag {bag} left out: none of its slides tiled and extracted"
        )
    table = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    calls = table.call.value_counts().sort_index()
    print(
        f"histodetect: {len(table)} new bags called in {out} ("
        + ", ".join(f"{c}: {n}" for c, n in calls.items())
        + f"); {int((~used).sum())} left out"
    )
