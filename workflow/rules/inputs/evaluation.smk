# Input functions and values of the evaluation rules (workflow/rules/evaluation.smk), kept apart
# from the rules as snakemake --lint asks; included by that file.
REPORT_TEXT = "results/report/workflow.rst"


def report_text():
    """The report's workflow page: this run's headline numbers once rule all (detection) or
    rule mil (slide labels only) wrote them."""
    for text in (REPORT_TEXT, MIL_REPORT_TEXT):
        if Path(text).exists():
            return str(Path(text).resolve())
    return "workflow/report/workflow.rst"
