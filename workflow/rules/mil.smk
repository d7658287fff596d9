# Slide and patient labels (MIL): the bag split and folds, one model per fold on the feature
# files, the fold ensemble over the test bags, attention maps per slide. Target: mil.
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
        mil={key: MIL.get(key) for key in ("bag", "classes", "task")},
        split=config["split"],
        folds=config["folds"],
        seed=config["seed"],
    script:
        "../scripts/mil_folds.py"


rule train_mil:
    input:
        folds=f"{MIL_DIR}/folds.tsv",
        features=lambda wc: expand(f"{FEATURE_DIR}/{{slide}}.h5", slide=mil_slides()),
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
        mil=MIL,
        seed=config["seed"],
        fold=lambda wc: int(wc.fold),
        feature_dir=FEATURE_DIR,
        encoder_id=ENCODER_ID,
        mlflow_uri=config["mlflow"]["uri"],
        experiment=config["mlflow"]["experiment"],
        tb_dir=lambda wc: f"results/tensorboard/mil_fold_{wc.fold}",
        tiles_dir="results/tiles",
        scores_dir=MIL_SCORES_DIR,
        topk_encoder=lambda wc: mil_topk_encoder() if MIL["model"] == "topk" else None,
    script:
        "../scripts/train_mil.py"


rule mil_ensemble:
    input:
        folds=f"{MIL_DIR}/folds.tsv",
        models=mil_fold_outputs("model.pt"),
        predictions=mil_fold_outputs("val_predictions.parquet"),
        features=lambda wc: expand(f"{FEATURE_DIR}/{{slide}}.h5", slide=mil_slides()),
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
        bootstrap=MIL["bootstrap"],
        seed=config["seed"],
        tiles_dir="results/tiles",
        scores_dir=MIL_SCORES_DIR,
    script:
        "../scripts/mil_ensemble.py"


rule mil_attention:
    input:
        folds=f"{MIL_DIR}/folds.tsv",
        models=mil_fold_outputs("model.pt"),
        features=lambda wc: expand(
            f"{FEATURE_DIR}/{{slide}}.h5", slide=mil_bag_slides(wc.slide)
        ),
        tiles=lambda wc: mil_tile_inputs(mil_bag_slides(wc.slide)),
        slide=slide_path,
    output:
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
        cell_px=MIL["cell_px"],
        tiles_dir="results/tiles",
        scores_dir=MIL_SCORES_DIR,
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


rule mil_top_tiles:
    input:
        folds=f"{MIL_DIR}/folds.tsv",
        models=mil_fold_outputs("model.pt"),
        predictions=f"{MIL_DIR}/predictions.tsv",
        metrics=f"{MIL_DIR}/metrics.json",
        features=lambda wc: expand(f"{FEATURE_DIR}/{{slide}}.h5", slide=mil_slides()),
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
        bags=MIL["top_bags"],
        tiles=MIL["top_tiles"],
        tiles_dir="results/tiles",
        scores_dir=MIL_SCORES_DIR,
        slide_paths=lambda wc: {s: sheet_row(s)["path"] for s in mil_top_tile_slides()},
    script:
        "../scripts/mil_top_tiles.py"


rule mil:
    input:
        mil_enabled,
        f"{MIL_DIR}/predictions.tsv",
        f"{MIL_DIR}/metrics.json",
        f"{MIL_DIR}/decision.json",
        f"{MIL_DIR}/roc.png",
        f"{MIL_DIR}/confusion.png",
        f"{MIL_DIR}/top_tiles.png",
        MIL_REPORT_TEXT,
        mil_attention_maps,


# The first page of `snakemake --report` when no detection ran (see report_text, common.smk).
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
        encoder=FEATURE_SOURCE.reason,
    script:
        "../scripts/mil_report_description.py"


# ---- predict with the slide-label models (target predict with mil.enabled) -----------------
# New slides of predict.samples: tiled as for the box models (rules/slides.smk), their features
# extracted as the cohort's, their bags (mil.bag) scored by this run's fold models or those of
# predict.models (an earlier run's results/mil), called at the decision saved beside them.
PREDICT_FEATURE_DIR = f"results/predict/features/{ENCODER_ID}"
PREDICT_MIL_DIR = "results/predict/mil"


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
    script:
        "../scripts/mil_decision.py"


if FEATURES["source"] != "import":

    use rule extract_features as predict_extract_features with:
        input:
            tiles="results/predict/tiles/{slide}.parquet",
            summary="results/predict/tiles/{slide}.json",
            encoder=feature_encoder_input,
        output:
            f"{PREDICT_FEATURE_DIR}/{{slide}}.h5",
        log:
            "logs/predict/extract_features/{slide}.log",
        benchmark:
            "benchmarks/predict/extract_features/{slide}.tsv"
        params:
            features=FEATURES,
            model=lambda wildcards: (
                ssl_settings()["ssl"]["model"]
                if FEATURES["source"] == "ssl"
                else FEATURES["model"]
            ),
            ssl_encoder=SSL_ENCODER,
            seed=config["seed"],
            encoder_id=ENCODER_ID,
            weights_sha256=feature_weights_sha256(),
            tiling=config["tiling"],
            bad_slides="exclude",


checkpoint predict_mil:
    input:
        mil_predict_ready,
        sheet=PREDICT_SHEET or [],
        tiling="results/predict/tiling_summary.tsv",
        features=predict_outputs(f"{PREDICT_FEATURE_DIR}/{{slide}}.h5"),
        models=mil_predict_models,
        decision=mil_predict_decision,
        tiles=lambda wc: (
            predict_outputs("results/predict/tiles/{slide}.parquet")(wc)
            if MIL_TILES
            else []
        ),
    output:
        predictions=f"{PREDICT_MIL_DIR}/predictions.tsv",
        bags=f"{PREDICT_MIL_DIR}/bags.tsv",
    log:
        "logs/predict/mil.log",
    conda:
        "../../envs/torch.yaml"
    threads: 2
    params:
        bag=MIL["bag"],
        feature_dir=PREDICT_FEATURE_DIR,
        encoder_id=ENCODER_ID,
        tiles_dir="results/predict/tiles",
    script:
        "../scripts/predict_mil.py"


use rule mil_attention as predict_mil_attention with:
    input:
        folds=f"{PREDICT_MIL_DIR}/bags.tsv",
        models=mil_predict_models,
        features=lambda wc: expand(
            f"{PREDICT_FEATURE_DIR}/{{slide}}.h5",
            slide=mil_predict_bag_slides(wc.slide),
        ),
        tiles=lambda wc: (
            expand(
                "results/predict/tiles/{slide}.parquet",
                slide=mil_predict_bag_slides(wc.slide),
            )
            if MIL_TILES
            else []
        ),
        slide=predict_slide_path,
    output:
        geojson=f"{PREDICT_MIL_DIR}/attention/{{slide}}.geojson",
        png=f"{PREDICT_MIL_DIR}/attention/{{slide}}.png",
    log:
        "logs/predict/mil_attention/{slide}.log",
    params:
        feature_dir=PREDICT_FEATURE_DIR,
        encoder_id=ENCODER_ID,
        tiles_dir="results/predict/tiles",
        scores_dir=None,
        cell_px=MIL["cell_px"],
        slide=predict_slide_file,
