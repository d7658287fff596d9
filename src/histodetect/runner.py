"""Glue for ``workflow/scripts``: logging to the rule's log and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from histodetect.errors import InputError

log = logging.getLogger("histodetect")


def setup_logging(log_path: str | None) -> None:
    """Send the package's log records to the rule's log file (and stderr)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


@contextlib.contextmanager
def rule_context(snakemake: Any) -> Iterator[None]:
    """Run a rule body: log to ``snakemake.log[0]``; bad input ends in one clear line.

    Any :class:`InputError` is written as ``ERROR <rule>: <file>: <cause>`` to the log and
    stderr and the job exits with status 1, without a traceback.
    """
    log_path = snakemake.log[0] if len(snakemake.log) else None
    setup_logging(log_path)
    try:
        yield
    except InputError as err:
        log.error("%s: %s", snakemake.rule, err)
        raise SystemExit(1) from None
