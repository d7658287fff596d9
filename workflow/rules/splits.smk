checkpoint split_patients:
    input:
        sheet=SAMPLE_SHEET,
        annotations=ANNOTATIONS,
    output:
        split="results/splits/split.tsv",
    params:
        split=config["split"],
        seed=config["seed"],
    log:
        "logs/split_patients.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/split_patients.py"


rule make_folds:
    input:
        split="results/splits/split.tsv",
        annotations=ANNOTATIONS,
    output:
        "results/splits/folds.tsv",
    params:
        folds=config["folds"],
        seed=config["seed"],
    log:
        "logs/make_folds.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/make_folds.py"


rule undersample:
    input:
        folds="results/splits/folds.tsv",
        labels=expand("results/labels/{slide}.parquet", slide=SLIDES),
    output:
        train="results/folds/fold_{fold}/train.parquet",
        val="results/folds/fold_{fold}/val.parquet",
    params:
        fold=lambda wc: int(wc.fold),
        sampling=config["sampling"],
        seed=config["seed"],
    log:
        "logs/undersample/fold_{fold}.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/undersample.py"
