# Input functions and values of the slides rules (workflow/rules/slides.smk), kept apart
# from the rules as snakemake --lint asks; included by that file.
def slide_mpp_override(wildcards):
    """The sheet's mpp of the slide (for files that do not record it), or None."""
    mpp = sheet_row(wildcards.slide).get("mpp")
    return None if mpp is None else float(mpp)
