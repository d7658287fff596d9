# Scores of the boxes against the truth (DigiLut F2 at GIoU > 0.5, AP, FROC), tuning of the
# box step out of fold, training curves and the report's first page.
include: "inputs/evaluation.smk"


rule training_curves:
    input:
        expand("results/models/fold_{fold}/training_metrics.json", fold=FOLDS),
    output:
        report(
            "results/models/curves.png",
            caption="../report/curves.rst",
            category="Training",
        ),
    log:
        "logs/training_curves.log",
    conda:
        "../../envs/torch.yaml"
    params:
        tb_dirs=expand("results/tensorboard/fold_{fold}", fold=FOLDS),
    script:
        "../scripts/training_curves.py"


rule tune_boxes:
    input:
        heatmaps=over_slides("results/oof/heatmaps/{slide}.npz", train_slides),
        scores=over_slides("results/oof/scores/{slide}.parquet", train_slides),
        summaries=over_slides("results/tiles/{slide}.json", train_slides),
        split=rules.split_patients.output.split,
        sheet=SAMPLE_SHEET,
        annotations=ANNOTATIONS,
        slide_annotations=all_slide_annotations,
    output:
        settings="results/tuning/boxes.json",
        search=report(
            "results/tuning/boxes_search.tsv",
            caption="../report/tuning.rst",
            category="Metrics",
        ),
        slide_search="results/tuning/slide_score_search.tsv",
    log:
        "logs/tune_boxes.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        boxes=config["boxes"],
        slide_score=config["slide_score"],
        evaluate=config["evaluate"],
        annotation_import=SETTINGS.annotation_import,
    script:
        "../scripts/tune_boxes.py"


rule evaluate:
    input:
        boxes=over_slides("results/boxes/{slide}.csv", test_slides),
        scores=over_slides("results/scores/{slide}.parquet", test_slides),
        labels=over_slides("results/labels/{slide}.parquet", test_slides),
        summaries=over_slides("results/tiles/{slide}.json", test_slides),
        sheet=SAMPLE_SHEET,
        annotations=ANNOTATIONS,
        slide_annotations=all_slide_annotations,
        tuned=tuned_boxes,
        threshold="results/models/threshold.json",
    output:
        metrics="results/metrics/detection.json",
        per_slide=report(
            "results/metrics/per_slide.tsv",
            caption="../report/per_slide.rst",
            category="Metrics",
        ),
        table=report(
            "results/metrics/metrics.tsv",
            caption="../report/metrics.rst",
            category="Metrics",
        ),
        submission="results/metrics/submission.csv",
        slides=report(
            "results/metrics/slides.tsv",
            caption="../report/slides.rst",
            category="Metrics",
        ),
        froc=report(
            "results/metrics/froc.png",
            caption="../report/froc.rst",
            category="Metrics",
        ),
        roc=report(
            "results/metrics/roc.png", caption="../report/roc.rst", category="Metrics"
        ),
    log:
        "logs/evaluate.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        evaluate=config["evaluate"],
        slide_score=config["slide_score"],
        annotation_import=SETTINGS.annotation_import,
        classes=config["labels"]["classes"],
    script:
        "../scripts/evaluate.py"


localrules:
    report_description,


# The first page of `snakemake --report` (see report_text above).
rule report_description:
    input:
        metrics="results/metrics/detection.json",
        tiling="results/qc/tiling_summary.tsv",
    output:
        REPORT_TEXT,
    log:
        "logs/report_description.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/report_description.py"
