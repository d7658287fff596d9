# Input functions and values of the detection rules (workflow/rules/detection.smk), kept apart
# from the rules as snakemake --lint asks; included by that file.
def tuned_boxes(wildcards=None):
    """The out-of-fold tuning record, when boxes.tune is on."""
    return "results/tuning/boxes.json" if config["boxes"]["tune"] else []
