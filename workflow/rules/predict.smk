# Target predict: the trained models on new, unlabelled slides (predict.samples): tiled as the
# cohort's are, then the box models' heatmaps, boxes and slide table (points and counts in
# points mode), or with mil.enabled the slide-label models' bag calls and attention maps.
# The models are this run's, or an earlier run's (predict.models).
include: "inputs/predict.smk"


# New slides (rule predict): tiled as the cohort's are; one that cannot be read is listed in
# results/predict/tiling_summary.tsv with its error and the others go on.
use rule tile_slide as predict_tile_slide with:
    input:
        slide=predict_slide_path,
    output:
        tiles="results/predict/tiles/{slide}.parquet",
        summary="results/predict/tiles/{slide}.json",
        qc="results/predict/qc/{slide}.png",
    log:
        "logs/predict/tile_slide/{slide}.log",
    benchmark:
        "benchmarks/predict/tile_slide/{slide}.tsv"
    params:
        path=predict_slide_file,
        mpp=predict_mpp_override,
        bad_slides="exclude",


checkpoint predict_tiling_summary:
    input:
        expand("results/predict/tiles/{slide}.json", slide=PREDICT_SLIDES),
    output:
        "results/predict/tiling_summary.tsv",
    log:
        "logs/predict/tiling_summary.log",
    conda:
        "../../envs/tiling.yaml"
    script:
        "../scripts/tiling_summary.py"


# New slides: the ensemble (this run's or predict.models), checked against the tiling.
use rule infer_slide as predict_infer_slide with:
    input:
        tiles="results/predict/tiles/{slide}.parquet",
        summary="results/predict/tiles/{slide}.json",
        models=predict_models,
        calibrations=predict_calibrations,
        threshold=predict_threshold,
    output:
        heatmap="results/predict/heatmaps/{slide}.npz",
        scores="results/predict/scores/{slide}.parquet",
    log:
        "logs/predict/infer_slide/{slide}.log",
    benchmark:
        "benchmarks/predict/infer_slide/{slide}.tsv"
    params:
        check_tiling=config["tiling"],


use rule boxes_from_heatmap as predict_boxes with:
    input:
        heatmap="results/predict/heatmaps/{slide}.npz",
        summary="results/predict/tiles/{slide}.json",
        sheet=PREDICT_SHEET or [],
        tuned=predict_tuning,
    output:
        boxes="results/predict/boxes/{slide}.csv",
        geojson="results/predict/boxes/{slide}.geojson",
        overlay="results/predict/overlays/{slide}.png",
    log:
        "logs/predict/boxes/{slide}.log",
    benchmark:
        "benchmarks/predict/boxes/{slide}.tsv"
    params:
        path=predict_slide_file,


rule predict_summary:
    input:
        sheet=PREDICT_SHEET or [],
        summaries=expand("results/predict/tiles/{slide}.json", slide=PREDICT_SLIDES),
        boxes=predict_outputs("results/predict/boxes/{slide}.csv"),
        scores=predict_outputs("results/predict/scores/{slide}.parquet"),
        tuned=predict_tuning,
    output:
        slides="results/predict/slides.tsv",
        submission="results/predict/submission.csv",
    log:
        "logs/predict/predict_summary.log",
    conda:
        "../../envs/tiling.yaml"
    params:
        slide_score=config["slide_score"],
        submission=config["predict"]["submission"],
    script:
        "../scripts/predict_summary.py"


# Target predict: the box models' outputs, or with mil.enabled the slide-label models' ones;
# in points mode also the new slides' points and counts.
rule predict:
    input:
        predict_sheet_given,
        predict_targets,
        predict_point_outputs,


use rule slide_points as predict_points with:
    input:
        heatmap="results/predict/heatmaps/{slide}.npz",
        summary="results/predict/tiles/{slide}.json",
        tuned=predict_point_tuning,
    output:
        points="results/predict/points/{slide}.csv",
        geojson="results/predict/points/{slide}.geojson",
        counts="results/predict/points/counts/{slide}.tsv",
    log:
        "logs/predict/points/{slide}.log",
    benchmark:
        "benchmarks/predict/points/{slide}.tsv"


use rule point_counts as predict_point_counts with:
    input:
        counts=predict_outputs("results/predict/points/counts/{slide}.tsv"),
    output:
        table="results/predict/points/counts.tsv",
    log:
        "logs/predict/point_counts.log",


# ---- the slide-label models on new slides (mil.enabled): features extracted as the cohort's,
# bags (mil.bag) scored by the fold models and called at the decision saved beside them (a
# numeric label: the models' mean; survival: the log risk and its group at the saved cuts).
if SETTINGS.features.source != "import":

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
            bad_slides="exclude",


checkpoint predict_mil:
    input:
        mil_predict_ready,
        sheet=PREDICT_SHEET or [],
        tiling=rules.predict_tiling_summary.output[0],
        features=predict_outputs(f"{PREDICT_FEATURE_DIR}/{{slide}}.h5"),
        models=mil_predict_models,
        decision=mil_predict_decision,
        tiles=lambda wc: mil_tile_inputs(tiled_new_slides(), "results/predict/tiles"),
    output:
        predictions=f"{PREDICT_MIL_DIR}/predictions.tsv",
        bags=f"{PREDICT_MIL_DIR}/bags.tsv",
    log:
        "logs/predict/mil.log",
    conda:
        "../../envs/torch.yaml"
    threads: 2
    params:
        bag=MIL.section["bag"],
        feature_dir=PREDICT_FEATURE_DIR,
        encoder_id=ENCODER_ID,
        tiles_dir="results/predict/tiles",
    script:
        "../scripts/predict_mil.py"


# survival and regression: the new slides' tiles' contributions, drawn as in the run
PREDICT_CONTRIBUTION = (
    {"contribution": f"{PREDICT_MIL_DIR}/attention/contribution/{{slide}}.png"}
    if MIL_CONTRIBUTION
    else {}
)


use rule mil_attention as predict_mil_attention with:
    input:
        folds=rules.predict_mil.output.bags,
        models=mil_predict_models,
        features=lambda wc: expand(
            f"{PREDICT_FEATURE_DIR}/{{slide}}.h5",
            slide=mil_predict_bag_slides(wc.slide),
        ),
        tiles=lambda wc: mil_tile_inputs(
            mil_predict_bag_slides(wc.slide), "results/predict/tiles"
        ),
        slide=predict_slide_path,
    output:
        **PREDICT_CONTRIBUTION,
        geojson=f"{PREDICT_MIL_DIR}/attention/{{slide}}.geojson",
        png=f"{PREDICT_MIL_DIR}/attention/{{slide}}.png",
    log:
        "logs/predict/mil_attention/{slide}.log",
    params:
        feature_dir=PREDICT_FEATURE_DIR,
        tiles_dir="results/predict/tiles",
        scores_dir=None,
        slide=predict_slide_file,
