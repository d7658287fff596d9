# histodetect: lesion detection in whole-slide images as tile classification.
#
#   slides -> tile_slide -> label_tiles -> split_patients -> make_folds -> undersample
#          -> train_fold (one job per fold) -> infer_slide (fold ensemble, test slides)
#          -> boxes_from_heatmap -> evaluate


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/tiling.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/inference.smk"
include: "workflow/rules/detection.smk"
include: "workflow/rules/evaluation.smk"


rule all:
    default_target: True
    input:
        "results/metrics/detection.json",
        "results/qc/tiling_summary.tsv",
        "results/models/summary.tsv",
        "results/models/curves.png",


onsuccess:
    print_run_summary()


onerror:
    print_run_summary()
