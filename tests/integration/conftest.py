"""Fixtures of the integration tests."""

from __future__ import annotations

import os
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
def run_copy(small_run: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the small run with its outputs, their mtimes and Snakemake's records.

    Model files and checkpoints (80% of the run's bytes) are hard links: the workflow writes
    them to a temporary name and renames it, so a rerun in the copy makes new files and leaves
    the run's own alone. Everything else, MLflow's artifact copies among them (MLflow copies
    over them in place), is copied.
    """
    workdir = tmp_path / "run"
    models = small_run / "results" / "models"
    linked: dict[str, tuple[int, int]] = {}

    def copy(src: str, dst: str) -> None:
        if Path(src).suffix == ".pt" and Path(src).is_relative_to(models):
            os.link(src, dst)
            linked[src] = (os.stat(src).st_mtime_ns, os.stat(src).st_size)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(small_run, workdir, symlinks=False, copy_function=copy)
    yield workdir
    changed = [
        p for p, was in linked.items() if (os.stat(p).st_mtime_ns, os.stat(p).st_size) != was
    ]
    assert not changed, f"the copy wrote into the small run's files in place: {changed}"


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
