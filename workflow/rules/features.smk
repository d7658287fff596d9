# Tile embeddings per slide, the layout CLAM and TRIDENT write, and the cohort's own encoder.
# Target `features`: every slide's results/features/<encoder_id>/<slide>.h5 and a summary.
ENCODER_ID = feature_encoder_id()
FEATURE_DIR = f"results/features/{ENCODER_ID}"


rule pretrain_encoder:
    input:
        split=SSL_SPLITS.values(),
        tiles=ssl_train_outputs("results/tiles/{slide}.parquet"),
        summaries=ssl_train_outputs("results/tiles/{slide}.json"),
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
        ssl=lambda wildcards: {**ssl_settings()["ssl"], "seed": config["seed"]},
        mlflow_uri=config["mlflow"]["uri"],
        experiment=config["mlflow"]["experiment"],
        tb_dir="results/tensorboard/ssl_encoder",
        tiling=model_tiling(),
    script:
        "../scripts/pretrain_encoder.py"


if FEATURES["source"] == "import":

    rule import_features:
        input:
            foreign=lambda wc: f"{FEATURES['import_dir']}/{wc.slide}.h5",
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
        expect=feature_expectations(),
    script:
        "../scripts/features_summary.py"


rule features:
    input:
        f"{FEATURE_DIR}/summary.tsv",
