# Tile embeddings per slide, the layout CLAM and TRIDENT write, and the cohort's own encoder.
# Target `features`: every slide's results/features/<encoder_id>/<slide>.h5 and a summary.
include: "inputs/features.smk"


rule pretrain_encoder:
    input:
        split=SETTINGS.ssl.splits.values(),
        tiles=over_slides("results/tiles/{slide}.parquet", ssl_train_slides),
        summaries=over_slides("results/tiles/{slide}.json", ssl_train_slides),
    output:
        encoder=SSL_ENCODER,
        metrics="results/encoder/ssl/metrics.json",
    log:
        "logs/pretrain_encoder.log",
    benchmark:
        "benchmarks/pretrain_encoder.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=480,
    params:
        ssl={**SETTINGS.ssl.record["ssl"], "seed": config["seed"]},
        mlflow_uri=config["mlflow"]["uri"],
        experiment=config["mlflow"]["experiment"],
        tb_dir="results/tensorboard/ssl_encoder",
        tiling=SETTINGS.train.tiling,
    script:
        "../scripts/pretrain_encoder.py"


if SETTINGS.features.source == "import":

    rule import_features:
        input:
            foreign=lambda wc: f"{config['features']['import_dir']}/{wc.slide}.h5",
        output:
            f"{FEATURE_DIR}/{{slide}}.h5",
        log:
            "logs/import_features/{slide}.log",
        conda:
            "../../envs/tiling.yaml"
        params:
            encoder_id=ENCODER_ID,
        script:
            "../scripts/import_features.py"

else:

    rule extract_features:
        input:
            tiles="results/tiles/{slide}.parquet",
            summary="results/tiles/{slide}.json",
            encoder=feature_encoder_input,
        output:
            f"{FEATURE_DIR}/{{slide}}.h5",
        log:
            "logs/extract_features/{slide}.log",
        benchmark:
            "benchmarks/extract_features/{slide}.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 2
        resources:
            mem_mb=lambda wildcards, attempt: 4000 * attempt,
        params:
            features=SETTINGS.features.section,
            model=SETTINGS.features.model,
            ssl_encoder=SSL_ENCODER,
            seed=config["seed"],
            encoder_id=ENCODER_ID,
            weights_sha256=SETTINGS.features.weights_sha256,
            tiling=config["tiling"],
            bad_slides=config["bad_slides"],
        script:
            "../scripts/extract_features.py"


rule features_summary:
    input:
        expand(f"{FEATURE_DIR}/{{slide}}.h5", slide=SLIDES),
    output:
        f"{FEATURE_DIR}/summary.tsv",
    log:
        "logs/features_summary.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        expect=SETTINGS.features.expectations,
    script:
        "../scripts/features_summary.py"


rule features:
    input:
        f"{FEATURE_DIR}/summary.tsv",
