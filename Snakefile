# histodetect: lesion detection in whole-slide images as tile classification.
#
# One rule file per stage, named like the package's subpackage (src/histodetect/<stage>/):
#   slides       tile_slide, tiling_summary (make_demo_cohort for the demo)
#   annotations  label_tiles
#   cohort       split_patients, make_folds, undersample (patch_folds in patch mode)
#   training     train_fold (one job per fold), fold_summary
#   features     extract_features (tile embeddings per slide), pretrain_encoder (the cohort's
#                own self-supervised encoder); target: features
#   mil          mil_folds, train_mil (one job per fold), mil_ensemble, mil_attention: models
#                of slide or patient labels on the features; target: mil
#   detection    infer_slide (fold ensemble, test slides), boxes_from_heatmap; points mode:
#                slide_points, point_counts (points and hotspot counts of test slides)
#   evaluation   training_curves, evaluate, report_description (first page of --report);
#                points mode: tune_points, evaluate_points; target: points


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/slides.smk"
include: "workflow/rules/annotations.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/mil.smk"
include: "workflow/rules/detection.smk"
include: "workflow/rules/evaluation.smk"


report: report_text()


rule all:
    default_target: True
    input:
        "results/metrics/detection.json",
        "results/qc/tiling_summary.tsv",
        "results/models/summary.tsv",
        "results/models/curves.png",
        REPORT_TEXT,
        POINT_TARGETS if POINTS_MODE else [],


onstart:
    print_encoder_choice()


onsuccess:
    print_run_summary()
    print_mil_summary()
    print_mil_predict_summary()


onerror:
    print_run_summary()
