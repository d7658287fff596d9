"""Fixtures of the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from _workflow import SMALL_CONFIG, snakemake, write_config


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run of the workflow on the small synthetic cohort (shared by tests)."""
    workdir = tmp_path_factory.mktemp("small_run")
    write_config(workdir, SMALL_CONFIG)
    snakemake(workdir)
    return workdir
