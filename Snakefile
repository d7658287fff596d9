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
#                of slide or patient labels on the features or tiles; target: mil
#   detection    infer_slide (fold ensemble, test slides), infer_oof, boxes_from_heatmap
#   points       points mode: oof_points, tune_points, slide_points, point_counts,
#                evaluate_points (points and hotspot counts of test slides); target: points
#   evaluation   training_curves, tune_boxes, evaluate, report_description (first page of
#                --report)
#   predict      the trained models on new slides (predict.samples); target: predict
#
# common.smk holds what every stage needs; each choice made from several keys is resolved once
# (histodetect.config.settings) into SETTINGS. docs/architecture.md maps keys to their place.


import sys


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/slides.smk"
include: "workflow/rules/annotations.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/mil.smk"
include: "workflow/rules/detection.smk"
include: "workflow/rules/points.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/predict.smk"


report: report_text()


rule all:
    default_target: True
    input:
        "results/metrics/detection.json",
        "results/qc/tiling_summary.tsv",
        "results/models/summary.tsv",
        "results/models/curves.png",
        REPORT_TEXT,
        POINT_TARGETS if SETTINGS.points_mode else [],


onstart:
    for line in SETTINGS.encoder_lines():
        print(line, file=sys.stderr)
    if config["io"]["worker"] and workflow.is_main_process and workflow.local_exec:
        WORKER.append(start_worker(Path(workflow.basedir) / "workflow" / "scripts"))


onsuccess:
    stop_worker(WORKER)
    for line in closing_lines():
        print(line)


onerror:
    stop_worker(WORKER)
    for line in run_summary_lines(config["evaluate"]["giou"]):
        print(line)
