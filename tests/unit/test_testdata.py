"""histodetect.testdata: local copies are checked, downloads are checked, failures are one line.

The download path runs for real: a local HTTP server on 127.0.0.1 serves copies of registered
files, and the registry's public URLs are swapped for its own.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from histodetect.testdata import REGISTRY, DataFile, RealDataError, TestData, main

# three small real files (one of them part of a multi-file DICOM slide) and the derived table
NAMES = [
    "camelyon16_tumor_001/Tumor_001.json",
    "slides/CMU-1-Small-Region-dicom/level-10-frames-0-1.dcm",
    "slides/CMU-1-Small-Region-dicom/level-11-frames-0-1.dcm",
]
DERIVED = "lc25000_lung/labels.csv"


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory, real_data: Callable[[str], Path]) -> Path:
    """A folder holding good copies of ``NAMES``."""
    folder = tmp_path_factory.mktemp("copy")
    for name in NAMES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_data(name), folder / name)
    return folder


@pytest.fixture
def server(copy: Path) -> Iterator[str]:
    """Base URL of an HTTP server on 127.0.0.1 serving ``copy``."""
    handler = functools.partial(QuietHandler, directory=str(copy))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        httpd.shutdown()
        thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def served(base: str, names: list[str] = NAMES) -> dict[str, DataFile]:
    """The registry entries of ``names`` with their public URLs swapped for ``base``."""
    return {n: dataclasses.replace(REGISTRY[n], url=base + n) for n in names}


def closed_port() -> str:
    """A URL on 127.0.0.1 where nothing listens: the download fails at once, like offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_registry_names_every_file_with_size_hash_and_source() -> None:
    assert len(REGISTRY) > 100
    for f in REGISTRY.values():
        assert f.size > 0 and len(f.sha256) == 64, f.name
        assert f.url is None or f.url.startswith("https://github.com/"), f.name
    # derived: LC25000's label table, and the idc_breast slides rebuilt from their patches
    derived = [n for n, f in REGISTRY.items() if f.url is None]
    assert derived[0] == DERIVED and len(derived) == 1 + 64
    assert all(n.startswith("idc_breast/") for n in derived[1:])


def test_local_copy_is_used_without_network(copy: Path, tmp_path: Path) -> None:
    data = TestData(copy, tmp_path / "cache", served(closed_port()))
    for name in NAMES:
        assert data.path(name) == copy / name
    assert (
        data.folder("slides/CMU-1-Small-Region-dicom") == copy / "slides/CMU-1-Small-Region-dicom"
    )
    assert not (tmp_path / "cache").exists()


def test_download_from_a_local_server_is_cached_and_checked(
    copy: Path, server: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    data = TestData(tmp_path / "no_copy", cache, served(server))
    for name in NAMES:
        got = data.path(name)
        assert got == cache / name
        assert hashlib.sha256(got.read_bytes()).hexdigest() == REGISTRY[name].sha256
    # a multi-file slide comes as one folder; and a second store finds the cache, no server
    assert (
        data.folder("slides/CMU-1-Small-Region-dicom") == cache / "slides/CMU-1-Small-Region-dicom"
    )
    again = TestData(tmp_path / "no_copy", cache, served(closed_port()))
    assert again.fetch_all() == [cache / n for n in NAMES]


def one_line(err: pytest.ExceptionInfo[RealDataError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_corrupted_local_copy_is_refused(copy: Path, tmp_path: Path, damage: str) -> None:
    name = NAMES[0]
    bad = tmp_path / "bad"
    shutil.copytree(copy, bad)
    data = (bad / name).read_bytes()
    broken = data[: len(data) // 2] if damage == "truncated" else data[:-1] + b"x"
    (bad / name).write_bytes(broken)
    with pytest.raises(RealDataError) as err:
        TestData(bad, tmp_path / "cache", served(closed_port())).path(name)
    msg = one_line(err)
    assert str(bad / name) in msg and "refused" in msg
    assert ("bytes, expected" if damage == "truncated" else "sha256") in msg


def test_corrupted_download_is_refused(copy: Path, server: str, tmp_path: Path) -> None:
    name = NAMES[0]
    wrong = {name: dataclasses.replace(REGISTRY[name], sha256="0" * 64, url=server + name)}
    data = TestData(tmp_path / "no_copy", tmp_path / "cache", wrong)
    with pytest.raises(RealDataError) as err:
        data.path(name)
    assert "refused: the download from http://127.0.0.1" in one_line(err)
    assert not (tmp_path / "cache" / name).exists()


def test_missing_file_names_it_the_folder_and_the_fetch_command(tmp_path: Path) -> None:
    data = TestData(tmp_path / "no_copy", tmp_path / "cache", served(closed_port()))
    with pytest.raises(RealDataError) as err:
        data.path(NAMES[0])
    msg = one_line(err)
    assert msg.startswith(f"{NAMES[0]}: not in {tmp_path / 'no_copy'} (download from http://")
    assert "python -m histodetect.testdata fetch" in msg and "HISTODETECT_TEST_DATA" in msg


def test_missing_derived_file_says_it_has_no_public_copy(tmp_path: Path) -> None:
    data = TestData(tmp_path / "no_copy", tmp_path / "cache", {DERIVED: REGISTRY[DERIVED]})
    with pytest.raises(RealDataError, match="no public copy") as err:
        data.path(DERIVED)
    assert DERIVED in one_line(err)
    assert data.fetchable() == []


def test_unregistered_name_is_refused(copy: Path) -> None:
    with pytest.raises(RealDataError, match="not a registered real test file"):
        TestData(copy).path("slides/other.svs")


def test_fetch_command_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["fetch", "--local", str(tmp_path / "none"), "--cache", str(tmp_path)]
    assert main(args, served(closed_port())) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and NAMES[0] in err


def test_fetch_command_checks_a_local_copy(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["fetch", "--local", str(copy), "--cache", str(tmp_path)]
    assert main(args, served(closed_port())) == 0
    assert capsys.readouterr().out.startswith(f"{len(NAMES)} real test files")
