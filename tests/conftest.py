"""Real test files for every test: through the ``real_data`` fixture, never by path.

Before the first test runs, every registered file is checked (local copy) or downloaded once
(see :mod:`histodetect.testdata`) when a collected test asks for real data (always, when xdist
workers run the tests); when one cannot be had, the session stops at once with one line naming
the file, the folder looked in and the command that fetches them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pooch
import pytest

from histodetect.testdata import RealDataError, TestData, default_local

REAL = TestData(local=default_local(Path(__file__).resolve().parents[1]))
FIXTURES = {
    "real_data",
    "cmu_svs",
    "tcga_svs",
    "cmu_dicom",
    "camelyon_tif",
    "camelyon_json",
    "mitos_field",
    "mitos_sqlite",
    "aperio_xml",
}


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(ModuleGroups(), "histodetect-module-groups")


def pytest_sessionstart(session: pytest.Session) -> None:
    """With xdist, the controller (which collects nothing) fetches every file before any worker."""
    config = session.config
    if config.pluginmanager.hasplugin("dsession") and not hasattr(config, "workerinput"):
        fetch_real_data()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller has fetched them
    if any(FIXTURES & set(getattr(item, "fixturenames", ())) for item in items):
        fetch_real_data()


def fetch_real_data() -> None:
    """Every registered file, checked or downloaded once; else stop with one line."""
    pooch.get_logger().setLevel("WARNING")  # no line per download
    try:
        REAL.fetch_all(REAL.fetchable())
    except RealDataError as err:
        pytest.exit(f"real test data: {err}", returncode=1)


class ModuleGroups:
    """One xdist group per test module, one for all modules using the shared small run;
    the modules that run a workflow go first.

    With ``--dist loadgroup`` a module-scoped workflow run is made once, on one worker, and
    the session's ``small_run`` once for every module that reads it.
    """

    @pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        shared = {i.path for i in items if "small_run" in getattr(i, "fixturenames", ())}
        for item in items:
            group = "small_run" if item.path in shared else item.path.stem
            item.add_marker(pytest.mark.xdist_group(group))
        # Long workflow runs first (``--no-loadscope-reorder`` keeps this order; xdist's
        # own puts groups with many tests first, so a few-test workflow module ran last).
        items.sort(
            key=lambda i: 0 if i.path in shared else 1 if "integration" in i.path.parts else 2
        )


def one_line(get: Callable[[], Path]) -> Path:
    """``get()``; a missing or refused file fails the test with its one line, no traceback."""
    try:
        return get()
    except RealDataError as err:
        message = f"real test data: {err}"
    pytest.fail(message, pytrace=False)  # outside the except: no "during handling" chain


@pytest.fixture(scope="session")
def real_data() -> Callable[[str], Path]:
    """``real_data(name)``: the checked path of a registered real file, e.g. ``slides/x.svs``."""
    return lambda name: one_line(lambda: REAL.path(name))


@pytest.fixture(scope="session")
def cmu_svs(real_data: Callable[[str], Path]) -> Path:
    """Aperio SVS, JPEG tiles, 2220x2967, 0.499 um/px."""
    return real_data("slides/CMU-1-Small-Region.svs")


@pytest.fixture(scope="session")
def tcga_svs(real_data: Callable[[str], Path]) -> Path:
    """Aperio SVS, JPEG 2000 tiles, 4443x3567, 2 levels, no mpp in the metadata."""
    return real_data("slides/TCGA-CR-7395-01A-01-TS1.svs")


@pytest.fixture(scope="session")
def cmu_dicom() -> Path:
    """Level 0 of the CMU slide as DICOM WSI, beside the other 11 levels of its pyramid."""
    return (
        one_line(lambda: REAL.folder("slides/CMU-1-Small-Region-dicom")) / "level-0-frames-0-30.dcm"
    )


@pytest.fixture(scope="session")
def camelyon_tif(real_data: Callable[[str], Path]) -> Path:
    """Camelyon16 tumor_001 at pyramid level 5 (about 7.78 um/px), no mpp tag."""
    return real_data("camelyon16_tumor_001/tumor_001_level5.tif")


@pytest.fixture(scope="session")
def camelyon_json(real_data: Callable[[str], Path]) -> Path:
    """The two expert outlines of tumor_001 (NCRF JSON, level-0 px)."""
    return real_data("camelyon16_tumor_001/Tumor_001.json")


@pytest.fixture(scope="session")
def mitos_field(real_data: Callable[[str], Path]) -> Path:
    """MITOS 2012 test field A01_04 (11 mitoses): a plain 2084x2084 JPEG at 0.2456 um/px."""
    return real_data("mitos2012/images/A01_04.jpg")


@pytest.fixture(scope="session")
def mitos_sqlite(real_data: Callable[[str], Path]) -> Path:
    """The 101 expert mitosis centres of the 15 MITOS 2012 test fields (SlideRunner database)."""
    return real_data("mitos2012/MITOS2012_test.sqlite")


@pytest.fixture(scope="session")
def aperio_xml(real_data: Callable[[str], Path]) -> Path:
    """ImageScope XML of TCGA-EJ-5519 (0.252 um/px): 4 layers, 3 regions with AreaMicrons."""
    return real_data("aperio_xml/TCGA-EJ-5519-01Z-00-DX1.xml")
