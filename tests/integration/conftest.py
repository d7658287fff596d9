"""Fixtures of the integration tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
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


@pytest.fixture
def run_copy(small_run: Path, tmp_path: Path) -> Path:
    """A copy of the small run with its outputs, their mtimes and Snakemake's records."""
    workdir = tmp_path / "run"
    shutil.copytree(small_run, workdir, symlinks=False, copy_function=shutil.copy2)
    return workdir


@pytest.fixture(scope="module")
def module_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Path]]:
    """Scratch folders for a module's runs, removed after its last test unless a test failed.

    A run holds fold models and checkpoints (hundreds of MB); kept to the end of the session,
    every module's runs together would fill a small CI disk.
    """
    made: list[Path] = []
    failed = request.session.testsfailed

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    if request.session.testsfailed == failed:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
