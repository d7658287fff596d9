# Input functions and values of the annotations rules (workflow/rules/annotations.smk), kept apart
# from the rules as snakemake --lint asks; included by that file.
BOX_INDEX = "results/annotations/boxes.parquet"  # the DigiLut CSV's boxes by slide


def slide_annotation(wildcards):
    """The slide's own annotation file (sample sheet column `annotation`), if any."""
    path = sheet_row(wildcards.slide).get("annotation")
    return [] if path is None or path == "" else [path]


def all_slide_annotations(wildcards=None):
    """Every per-slide annotation file named in the sample sheet."""
    if "annotation" not in samples.columns:
        return []
    return [p for p in samples["annotation"] if isinstance(p, str) and p]
