# Input functions and values of the mil rules (workflow/rules/mil.smk), kept apart
# from the rules as snakemake --lint asks; included by that file.
from histodetect.cohort.bags import OUTCOME_TASKS, bag_table

MIL = (
    SETTINGS.mil
)  # the mil section and what follows from it (family, tile scores, encoder)
MIL_DIR = "results/mil"
MIL_REPORT_TEXT = "results/report/mil.rst"
# The sheet's bags (mil.bag), checked before any job runs: one line naming sheet, row, value.
MIL_BAGS = bag_table(samples, MIL.section, SAMPLE_SHEET) if MIL.enabled else None


def mil_enabled(wildcards=None):
    """Nothing, once mil.enabled is set; otherwise the one line that says so."""
    if not MIL.enabled:
        raise InputError(
            "config",
            "mil.enabled is false: set it (with a label column in the sample sheet), e.g. "
            "--configfile config/mil_demo.yaml",
        )
    return []


def mil_figure_files(wildcards=None):
    """The task's report pictures: ROC and confusion for classes, a scatter for a number,
    Kaplan-Meier curves of the risk groups for survival."""
    if MIL.section["task"] == "regression":
        return [f"{MIL_DIR}/scatter.png"]
    if MIL.section["task"] == "survival":
        return [f"{MIL_DIR}/km.png"]
    return [f"{MIL_DIR}/roc.png", f"{MIL_DIR}/confusion.png"]


def mil_slides():
    """Slides of the sheet whose bags the models see (all, with mil enabled)."""
    return list(MIL_BAGS.slide_id) if MIL.enabled else []


def mil_features(slides):
    return expand(f"{FEATURE_DIR}/{{slide}}.h5", slide=slides)


def mil_tile_inputs(slides, tiles_dir="results/tiles"):
    """The tile tables (and detection scores) of ``slides``, for a family that reads tiles."""
    if not MIL.family.reads_tiles:
        return []
    names = [f"{tiles_dir}/{{slide}}.parquet", f"{tiles_dir}/{{slide}}.json"]
    if MIL.scores_dir:
        names.append(f"{MIL.scores_dir}/{{slide}}.parquet")
    return expand(names, slide=slides)


def mil_topk_encoder_input(wildcards=None):
    """The cohort's own encoder file, when topk's tile encoder starts from it."""
    start = MIL.topk_encoder or {}
    return SSL_ENCODER if start.get("checkpoint") == SSL_ENCODER else []


def mil_fold_outputs(name):
    return expand(f"{MIL_DIR}/fold_{{fold}}/{name}", fold=FOLDS)


def mil_bag_slides(slide):
    """The slides of ``slide``'s bag (its attention is shared within the bag)."""
    bags = MIL_BAGS.set_index("slide_id").bag_id
    if slide not in bags.index:
        raise InputError(SAMPLE_SHEET, f"slide {slide!r} is not in the sample sheet")
    return list(bags.index[bags == bags[slide]])


def mil_folds_table():
    """results/mil/folds.tsv (known once checkpoint mil_folds has run)."""
    return table_of(checkpoints.mil_folds.get().output[0])


def mil_attention_maps(wildcards):
    """Attention maps of every slide that tiled (survival, regression: and the tiles'
    contributions to the bag's number)."""
    folds = mil_folds_table()
    used = folds.slide_id[folds.split != "excluded"]
    maps = expand(
        f"{MIL_DIR}/attention/{{slide}}.{{ext}}", slide=used, ext=["geojson", "png"]
    )
    if MIL.section["task"] in OUTCOME_TASKS:
        maps += expand(f"{MIL_DIR}/attention/contribution/{{slide}}.png", slide=used)
    return maps


def mil_top_tile_slides():
    """Slides of the bags the top-tiles picture shows: the labelled test bags that tiled, or
    the labelled training bags where there are none (split.test_fraction: 0)."""
    folds = mil_folds_table()
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
