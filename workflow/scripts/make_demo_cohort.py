"""Snakemake script: write the synthetic demo cohort (slides, samples.tsv, annotations.csv).

Expects ``output.samples`` (``<dir>/samples.tsv``; ``annotations.csv`` and ``slides/`` go beside
it), ``params.demo`` (keyword arguments of :func:`histodetect.synthetic.make_cohort`) and
optionally ``log[0]``.
"""

# No ``from __future__`` import: Snakemake prepends its own preamble to this file.
import logging
import time
from pathlib import Path

from histodetect.synthetic import make_cohort


def main() -> None:
    """Run with the ``snakemake`` object injected by the ``script:`` directive."""
    log_file = snakemake.log[0] if len(snakemake.log) else None
    logging.basicConfig(
        filename=log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    log = logging.getLogger("make_demo_cohort")
    params = dict(snakemake.params.demo)
    for key in ("lesions_per_slide", "lesion_size_um"):
        if key in params:
            params[key] = tuple(params[key])  # YAML gives lists
    out_dir = Path(snakemake.output.samples).parent
    log.info("writing synthetic cohort to %s with %s", out_dir, params)
    start = time.perf_counter()
    try:
        samples, boxes = make_cohort(out_dir, **params)
    except Exception:
        log.exception("synthetic cohort failed")
        raise
    log.info(
        "%d slides of %d patients, %d lesion boxes, in %.1f s",
        len(samples),
        samples["patient_id"].nunique(),
        len(boxes),
        time.perf_counter() - start,
    )


main()
