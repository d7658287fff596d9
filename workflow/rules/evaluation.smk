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
        heatmaps=train_outputs("results/oof/heatmaps/{slide}.npz"),
        scores=train_outputs("results/oof/scores/{slide}.parquet"),
        summaries=train_outputs("results/tiles/{slide}.json"),
        split="results/splits/split.tsv",
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
        annotation_import=config.get("annotation_import", {}),
    script:
        "../scripts/tune_boxes.py"


rule evaluate:
    input:
        boxes=test_outputs("results/boxes/{slide}.csv"),
        scores=test_outputs("results/scores/{slide}.parquet"),
        labels=test_outputs("results/labels/{slide}.parquet"),
        summaries=test_outputs("results/tiles/{slide}.json"),
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
        annotation_import=config.get("annotation_import", {}),
        classes=config["labels"]["classes"],
    script:
        "../scripts/evaluate.py"


localrules:
    report_description,


# The first page of `snakemake --report` (see report_text in common.smk).
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


localrules:
    evaluate_points,
    tune_points,


# The point step (method, distance, threshold) tuned on the training fields' OOF heatmaps.
rule tune_points:
    input:
        heatmaps=train_outputs("results/oof/heatmaps/{slide}.npz"),
        summaries=train_outputs("results/tiles/{slide}.json"),
        split="results/splits/split.tsv",
        sheet=SAMPLE_SHEET,
        slide_annotations=all_slide_annotations,
    output:
        settings="results/tuning/points.json",
        search=report(
            "results/tuning/points_search.tsv",
            caption="../report/point_tuning.rst",
            category="Metrics",
        ),
    log:
        "logs/tune_points.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        points=config["points"],
        labels=config["labels"],
        annotation_import=config.get("annotation_import", {}),
    script:
        "../scripts/tune_points.py"


# The point metric out of fold: each fold's slides at the threshold best on the other folds;
# the test slides' points at the tuned setting; count errors of both.
rule evaluate_points:
    input:
        points=train_outputs("results/oof/points/{slide}.csv"),
        summaries=train_outputs("results/tiles/{slide}.json"),
        test_points=test_outputs("results/points/{slide}.csv"),
        test_summaries=test_outputs("results/tiles/{slide}.json"),
        tuned="results/tuning/points.json",
        folds="results/splits/folds.tsv",
        sheet=SAMPLE_SHEET,
        slide_annotations=all_slide_annotations,
    output:
        metrics="results/metrics/points.json",
        per_image="results/metrics/points_per_image.tsv",
    log:
        "logs/evaluate_points.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        points=config["points"],
        labels=config["labels"],
        annotation_import=config.get("annotation_import", {}),
        seed=config["seed"],
    script:
        "../scripts/evaluate_points.py"


# Points mode (labels.overlap: point): tuned points, counts and the point metric.
rule points:
    input:
        POINT_TARGETS,
