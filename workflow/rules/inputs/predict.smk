# Input functions and values of the predict rules (workflow/rules/predict.smk), kept apart
# from the rules as snakemake --lint asks; included by that file.
from glob import glob

from histodetect.cohort.bags import predict_bag_ids
from histodetect.mil.records import read_decision_record

PREDICT = config["predict"]
PREDICT_SHEET = PREDICT["samples"]
if PREDICT_SHEET:
    predict_samples = read_sample_sheet(
        PREDICT_SHEET, workflow.source_path("../../schemas/predict_samples.schema.yaml")
    ).set_index("slide_id", drop=False)
else:
    predict_samples = pd.DataFrame(columns=["slide_id", "path"], dtype=str)
PREDICT_SLIDES = list(predict_samples.slide_id)
if PREDICT_SHEET and MIL.enabled:  # the bag column of mil.bag, or one line
    predict_bag_ids(predict_samples, MIL.section["bag"], PREDICT_SHEET)
PREDICT_FEATURE_DIR = f"results/predict/features/{ENCODER_ID}"
PREDICT_MIL_DIR = "results/predict/mil"


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


def tiled_new_slides():
    """The new slides that tiled (known once predict_tiling_summary has run)."""
    table = table_of(checkpoints.predict_tiling_summary.get().output[0], slide_id=str)
    return list(table.slide_id[table.status == "ok"])


def predict_outputs(pattern):
    """``pattern`` for every new slide that tiled."""
    return over_slides(pattern, tiled_new_slides)


def model_folder(fold_models):
    """This run's fold models (``fold_models``), or those of predict.models (a folder of
    fold_*/model.pt: an earlier run's results/models or results/mil)."""
    if not PREDICT["models"]:
        return fold_models
    found = sorted(glob(os.path.join(PREDICT["models"], "fold_*", "model.pt")))
    if not found:
        raise InputError(PREDICT["models"], "predict.models holds no fold_*/model.pt")
    return found


def predict_models(wildcards=None):
    return model_folder(fold_models())


def predict_calibrations(wildcards=None):
    """calibration.json beside each predict model; one missing is refused by the job, naming it."""
    if not PREDICT["models"]:
        return fold_calibrations()
    beside = [Path(p).parent / "calibration.json" for p in predict_models()]
    return [str(p) for p in beside if p.exists()]


def predict_threshold(wildcards=None):
    """The models' out-of-fold decision: this run's, or threshold.json in predict.models."""
    if not PREDICT["models"]:
        return rules.oof_threshold.output.threshold
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


def predict_point_tuning(wildcards=None):
    """The point tuning new slides use: beside predict.tuning, in predict.models' run, or
    this run's results/tuning/points.json."""
    if PREDICT["tuning"]:
        beside = Path(PREDICT["tuning"]).parent / "points.json"
    elif PREDICT["models"]:
        beside = Path(PREDICT["models"]).parent / "tuning" / "points.json"
    else:
        return rules.tune_points.output.settings
    if not beside.exists():
        raise InputError(
            beside,
            "points of new slides need the point tuning of the models' run (rule tune_points) "
            "beside predict.tuning or predict.models",
        )
    return str(beside)


def predict_point_outputs(wildcards):
    """In points mode, the new slides' points and their count table."""
    if not SETTINGS.points_mode:
        return []
    return [
        *predict_outputs("results/predict/points/{slide}.csv")(wildcards),
        "results/predict/points/counts.tsv",
    ]


def mil_predict_ready(wildcards=None):
    """Nothing, when the slide-label models can predict; otherwise the one line that says why."""
    predict_sheet_given()
    if SETTINGS.features.source == "import":
        raise InputError(
            "config",
            "predict with mil extracts the new slides' features itself: features.source "
            "import has no encoder to run on them",
        )
    if MIL.scores_dir:
        raise InputError(
            "config",
            "predict with mil.model concat and mil.concat.score: detection is not built yet "
            "(the new slides would need the box models' tile scores): use score random",
        )
    return []


def mil_predict_models(wildcards=None):
    return model_folder(mil_fold_outputs("model.pt"))


def mil_predict_decision(wildcards=None):
    """The MIL models' out-of-fold decision (decision.json beside them), checked against this
    config's features and mil.bag before any job runs."""
    if not PREDICT["models"]:
        return rules.mil_decision.output[0]
    path = Path(PREDICT["models"]) / "decision.json"
    if not path.exists():
        raise InputError(
            PREDICT["models"],
            "no decision.json beside the fold models: run target mil of that run again "
            "(it writes the out-of-fold decision there)",
        )
    read_decision_record(path, encoder_id=ENCODER_ID, bag=MIL.section["bag"])
    return str(path)


def predict_bags():
    return table_of(checkpoints.predict_mil.get().output.bags)


def mil_predict_bag_slides(slide):
    """The slides of ``slide``'s prediction bag that tiled and extracted (after predict_mil)."""
    bags = predict_bags()
    used = bags[bags.split == "predict"]
    bag = used.bag_id[used.slide_id == slide]
    if bag.empty:
        raise InputError(
            f"{PREDICT_MIL_DIR}/bags.tsv", f"slide {slide!r} is in no scored bag"
        )
    return list(used.slide_id[used.bag_id == bag.iloc[0]])


def predict_targets(wildcards):
    """What target predict makes: the slide-label models' answers and attention maps with
    mil.enabled, the box models' slide table and submission otherwise."""
    if not MIL.enabled:
        return rules.predict_summary.output
    bags = predict_bags()
    used = bags.slide_id[bags.split == "predict"]
    maps = expand(
        f"{PREDICT_MIL_DIR}/attention/{{slide}}.{{ext}}",
        slide=used,
        ext=["geojson", "png"],
    )
    if MIL.section["task"] in OUTCOME_TASKS:
        maps += expand(
            f"{PREDICT_MIL_DIR}/attention/contribution/{{slide}}.png", slide=used
        )
    return [f"{PREDICT_MIL_DIR}/predictions.tsv"] + maps
