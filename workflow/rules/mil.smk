# Slide and patient labels (MIL): the bag split and folds, one model per fold on the feature
# files, the fold ensemble over the test bags, attention maps per slide. Target: mil.
localrules:
    mil_folds,
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
        mil=MIL,
        split=config["split"],
        folds=config["folds"],
        seed=config["seed"],
    script:
        "../scripts/mil_folds.py"


rule train_mil:
    input:
        folds=f"{MIL_DIR}/folds.tsv",
        features=lambda wc: expand(f"{FEATURE_DIR}/{{slide}}.h5", slide=mil_slides()),
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
    script:
        "../scripts/train_mil.py"


rule mil_ensemble:
    input:
        folds=f"{MIL_DIR}/folds.tsv",
        models=mil_fold_outputs("model.pt"),
        predictions=mil_fold_outputs("val_predictions.parquet"),
        features=lambda wc: expand(f"{FEATURE_DIR}/{{slide}}.h5", slide=mil_slides()),
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
    script:
        "../scripts/mil_ensemble.py"


rule mil_attention:
    input:
        folds=f"{MIL_DIR}/folds.tsv",
        models=mil_fold_outputs("model.pt"),
        features=lambda wc: expand(
            f"{FEATURE_DIR}/{{slide}}.h5", slide=mil_bag_slides(wc.slide)
        ),
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
    script:
        "../scripts/mil_attention.py"


rule mil:
    input:
        mil_enabled,
        f"{MIL_DIR}/predictions.tsv",
        f"{MIL_DIR}/metrics.json",
        mil_attention_maps,
