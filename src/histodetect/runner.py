"""Glue for ``workflow/scripts``: logging to the rule's log and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from histodetect.errors import InputError

log = logging.getLogger("histodetect")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def rule_context(snakemake: Any) -> Iterator[None]:
    """Run a rule body with its output going to ``snakemake.log[0]``.

    Log records and whatever the body writes to stderr (progress bars, warnings) go to the
    log file; warnings and errors also reach the console. An :class:`InputError` ends the job
    with one line, ``<rule>: <file>: <cause>``, and exit status 1, without a traceback. A body
    that ends well logs ``rule body done in <s> s``: the job's own work, beside its start-up
    (``bench/overhead.py`` reads it).
    """
    console = logging.StreamHandler(sys.__stderr__)
    console.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [console]
    stream = None
    if len(snakemake.log):
        stream = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115
        handlers.append(logging.StreamHandler(stream))
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=handlers, force=True)
    saved = sys.stderr
    if stream is not None:
        sys.stderr = stream
    started = time.perf_counter()
    try:
        yield
        log.info("rule body done in %.3f s", time.perf_counter() - started)
    except InputError as err:
        log.error("%s: %s", snakemake.rule, err)
        raise SystemExit(1) from None
    finally:
        sys.stderr = saved
        logging.getLogger().handlers.clear()
        if stream is not None:
            stream.close()
