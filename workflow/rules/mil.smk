# Slide and patient labels (MIL): the bag split and folds, one model per fold of mil.model's
# family (histodetect.mil.families) on the feature files or the slides' tiles, the fold ensemble
# over the test bags, attention maps per slide. Target: mil.
include: "inputs/mil.smk"


localrules:
    mil_folds,
    mil_report_description,
    mil,


checkpoint mil_folds:
    input:
        sheet=SAMPLE_SHEET,
        tiling="results/qc/tiling_summary.tsv",
    output:
        f"{MIL_DIR}/folds.tsv",
    log:
        "logs/mil_folds.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        # what the folds depend on: a new bag model must not redraw them (and so rerun
        # pretrain_encoder, which learns on their training patients, and the features)
        mil=MIL.fold_params,
        split=config["split"],
        folds=config["folds"],
        seed=config["seed"],
    script:
        "../scripts/mil_folds.py"


rule train_mil:
    input:
        folds=rules.mil_folds.output[0],
        features=lambda wc: mil_features(mil_slides()),
        tiles=lambda wc: mil_tile_inputs(mil_slides()),
        encoder=mil_topk_encoder_input,
    output:
        model=f"{MIL_DIR}/fold_{{fold}}/model.pt",
        metrics=f"{MIL_DIR}/fold_{{fold}}/training_metrics.json",
        predictions=f"{MIL_DIR}/fold_{{fold}}/val_predictions.parquet",
    log:
        "logs/train_mil/fold_{fold}.log",
    benchmark:
        "benchmarks/train_mil/fold_{fold}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=120,
    params:
        mil=MIL.section,
        seed=config["seed"],
        fold=lambda wc: int(wc.fold),
        feature_dir=FEATURE_DIR,
        encoder_id=ENCODER_ID,
        mlflow_uri=config["mlflow"]["uri"],
        experiment=config["mlflow"]["experiment"],
        tb_dir=lambda wc: f"results/tensorboard/mil_fold_{wc.fold}",
        tiles_dir="results/tiles",
        scores_dir=MIL.scores_dir,
        topk_encoder=MIL.topk_encoder,
    script:
        "../scripts/train_mil.py"


rule mil_ensemble:
    input:
        folds=rules.mil_folds.output[0],
        models=mil_fold_outputs("model.pt"),
        predictions=mil_fold_outputs("val_predictions.parquet"),
        features=lambda wc: mil_features(mil_slides()),
        tiles=lambda wc: mil_tile_inputs(mil_slides()),
    output:
        predictions=report(
            f"{MIL_DIR}/predictions.tsv",
            caption="../report/mil_predictions.rst",
            category="Slide labels (MIL)",
        ),
        metrics=f"{MIL_DIR}/metrics.json",
    log:
        "logs/mil_ensemble.log",
    conda:
        "../../envs/torch.yaml"
    threads: 2
    params:
        feature_dir=FEATURE_DIR,
        encoder_id=ENCODER_ID,
        bootstrap=MIL.section["bootstrap"],
        seed=config["seed"],
        tiles_dir="results/tiles",
        scores_dir=MIL.scores_dir,
        survival=MIL.survival_params,
    script:
        "../scripts/mil_ensemble.py"


# survival and regression: the tiles' contributions to the bag's risk or value, drawn too
MIL_CONTRIBUTION = (
    {
        "contribution": report(
            f"{MIL_DIR}/attention/contribution/{{slide}}.png",
            caption="../report/mil_contribution.rst",
            category="Slide labels (MIL)",
            subcategory="Risk contribution",
            labels={"slide": "{slide}"},
        )
    }
    if MIL.enabled and MIL.section["task"] in OUTCOME_TASKS
    else {}
)


rule mil_attention:
    input:
        folds=rules.mil_folds.output[0],
        models=mil_fold_outputs("model.pt"),
        features=lambda wc: mil_features(mil_bag_slides(wc.slide)),
        tiles=lambda wc: mil_tile_inputs(mil_bag_slides(wc.slide)),
        slide=slide_path,
    output:
        **MIL_CONTRIBUTION,
        geojson=f"{MIL_DIR}/attention/{{slide}}.geojson",
        png=report(
            f"{MIL_DIR}/attention/{{slide}}.png",
            caption="../report/mil_attention.rst",
            category="Slide labels (MIL)",
            subcategory="Attention",
            labels={"slide": "{slide}"},
        ),
    log:
        "logs/mil_attention/{slide}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        feature_dir=FEATURE_DIR,
        encoder_id=ENCODER_ID,
        cell_px=MIL.section["cell_px"],
        time_unit=MIL.section["time_unit"],
        tiles_dir="results/tiles",
        scores_dir=MIL.scores_dir,
        slide=slide_file,
    script:
        "../scripts/mil_attention.py"


rule mil_figures:
    input:
        predictions=f"{MIL_DIR}/predictions.tsv",
        metrics=f"{MIL_DIR}/metrics.json",
    output:
        roc=report(
            f"{MIL_DIR}/roc.png",
            caption="../report/mil_roc.rst",
            category="Slide labels (MIL)",
        ),
        confusion=report(
            f"{MIL_DIR}/confusion.png",
            caption="../report/mil_confusion.rst",
            category="Slide labels (MIL)",
        ),
    log:
        "logs/mil_figures.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/mil_figures.py"


rule mil_scatter:
    input:
        predictions=f"{MIL_DIR}/predictions.tsv",
    output:
        scatter=report(
            f"{MIL_DIR}/scatter.png",
            caption="../report/mil_scatter.rst",
            category="Slide labels (MIL)",
        ),
    log:
        "logs/mil_scatter.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/mil_scatter.py"


rule mil_km:
    input:
        predictions=f"{MIL_DIR}/predictions.tsv",
        metrics=f"{MIL_DIR}/metrics.json",
    output:
        km=report(
            f"{MIL_DIR}/km.png",
            caption="../report/mil_km.rst",
            category="Slide labels (MIL)",
        ),
    log:
        "logs/mil_km.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/mil_km.py"


rule mil_top_tiles:
    input:
        folds=rules.mil_folds.output[0],
        models=mil_fold_outputs("model.pt"),
        predictions=f"{MIL_DIR}/predictions.tsv",
        metrics=f"{MIL_DIR}/metrics.json",
        features=lambda wc: mil_features(mil_slides()),
        slides=lambda wc: mil_top_tile_slide_files(),
        tiles=lambda wc: mil_tile_inputs(mil_top_tile_slides()),
    output:
        png=report(
            f"{MIL_DIR}/top_tiles.png",
            caption="../report/mil_top_tiles.rst",
            category="Slide labels (MIL)",
        ),
    log:
        "logs/mil_top_tiles.log",
    conda:
        "../../envs/torch.yaml"
    threads: 2
    params:
        feature_dir=FEATURE_DIR,
        encoder_id=ENCODER_ID,
        bags=MIL.section["top_bags"],
        tiles=MIL.section["top_tiles"],
        tiles_dir="results/tiles",
        scores_dir=MIL.scores_dir,
        slide_paths=lambda wc: {s: sheet_row(s)["path"] for s in mil_top_tile_slides()},
    script:
        "../scripts/mil_top_tiles.py"


rule mil:
    input:
        mil_enabled,
        f"{MIL_DIR}/predictions.tsv",
        f"{MIL_DIR}/metrics.json",
        f"{MIL_DIR}/decision.json",
        mil_figure_files,
        f"{MIL_DIR}/top_tiles.png",
        MIL_REPORT_TEXT,
        mil_attention_maps,


# The first page of `snakemake --report` when no detection ran (see report_text, evaluation.smk).
rule mil_report_description:
    input:
        metrics=f"{MIL_DIR}/metrics.json",
        tiling="results/qc/tiling_summary.tsv",
    output:
        MIL_REPORT_TEXT,
    log:
        "logs/mil_report_description.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        encoder=SETTINGS.features.choice.reason,
    script:
        "../scripts/mil_report_description.py"


rule mil_decision:
    input:
        models=mil_fold_outputs("model.pt"),
        predictions=mil_fold_outputs("val_predictions.parquet"),
    output:
        f"{MIL_DIR}/decision.json",
    log:
        "logs/mil_decision.log",
    conda:
        "../../envs/torch.yaml"
    params:
        survival=MIL.survival_params,
    script:
        "../scripts/mil_decision.py"
