"""The real test files: where each came from, its size and sha256, and how to get it.

Every real file that a test or a benchmark reads is listed in ``testdata_registry.txt`` (one
line each: name, bytes, sha256, the public URL it was copied from; ``-`` for a derived file
with no public copy). A file is taken from a local folder when it is there
(``HISTODETECT_TEST_DATA``, else ``../shared/data`` beside the checkout), otherwise from a
cache that :mod:`pooch` downloads into once (``HISTODETECT_TEST_DATA_CACHE``, else the user
cache). Either way its size and sha256 are checked: a file that does not match is refused.
Everything fails with one line that names the file, the folder looked in and the command that
fetches every file::

    python -m histodetect.testdata fetch
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pooch

from histodetect.errors import InputError, name_some

ENV_LOCAL = "HISTODETECT_TEST_DATA"
ENV_CACHE = "HISTODETECT_TEST_DATA_CACHE"
FETCH_COMMAND = "python -m histodetect.testdata fetch"
REGISTRY_FILE = Path(__file__).with_name("testdata_registry.txt")
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root of a src/ checkout
TIMEOUT_S = 20


class RealDataError(InputError):
    """A real test file that is missing, cannot be downloaded or does not match its hash."""


@dataclass(frozen=True)
class DataFile:
    """One registered file: its name below the data folder, size, sha256 and public URL."""

    name: str
    size: int
    sha256: str
    url: str | None  # None: a derived file with no public copy


def read_registry(path: Path = REGISTRY_FILE) -> dict[str, DataFile]:
    """The registered files by name (``#`` starts a comment line)."""
    files = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, size, sha256, url = line.split()
        files[name] = DataFile(name, int(size), sha256, None if url == "-" else url)
    return files


REGISTRY = read_registry()


def default_local(checkout: Path = CHECKOUT) -> Path:
    """``$HISTODETECT_TEST_DATA`` when set, else ``../shared/data`` beside ``checkout``."""
    env = os.environ.get(ENV_LOCAL)
    return Path(env).expanduser() if env else checkout.parent / "shared" / "data"


def default_cache() -> Path:
    """``$HISTODETECT_TEST_DATA_CACHE`` when set, else the user cache of histodetect."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path(pooch.os_cache("histodetect")) / "testdata"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TestData:
    """Real test files from a local folder, else from a cache filled by download."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        local: Path | None = None,
        cache: Path | None = None,
        files: Mapping[str, DataFile] = REGISTRY,
    ) -> None:
        self.local = Path(local) if local is not None else default_local()
        self.cache = Path(cache) if cache is not None else default_cache()
        self.files = dict(files)
        self._checked: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime) seen matching
        self._pooch = pooch.create(
            path=self.cache,
            base_url="",
            registry={f.name: f"sha256:{f.sha256}" for f in self.files.values() if f.url},
            urls={f.name: f.url for f in self.files.values() if f.url},
        )

    def path(self, name: str) -> Path:
        """The checked local or cached copy of ``name``, downloaded first if need be."""
        entry = self._entry(name)
        local = self.local / name
        if local.is_file():
            return self._check(local, entry)
        return self._download(entry)

    def folder(self, prefix: str) -> Path:
        """A folder holding every registered file below ``prefix`` (a multi-file DICOM slide)."""
        names = [n for n in self.files if n.startswith(prefix.rstrip("/") + "/")]
        if not names:
            raise RealDataError(prefix, "no real test file is registered below this folder")
        if all((self.local / n).is_file() for n in names):
            for n in names:
                self._check(self.local / n, self.files[n])
            return self.local / prefix
        for n in names:
            self._download(self.files[n])
        return self.cache / prefix

    def fetch_all(self, names: Iterable[str] | None = None) -> list[Path]:
        """Every file (or those named) checked locally or downloaded; the first failure raises."""
        return [self.path(n) for n in (self.files if names is None else names)]

    def fetchable(self) -> list[str]:
        """The files that are here or can be downloaded (a derived file only from a copy)."""
        return [n for n, f in self.files.items() if f.url or (self.local / n).is_file()]

    def _entry(self, name: str) -> DataFile:
        if name not in self.files:
            raise RealDataError(name, f"not a registered real test file (see {REGISTRY_FILE})")
        return self.files[name]

    def _seen(self, path: Path) -> bool:
        """Checked before in this process and not changed since."""
        stat = path.stat()
        return self._checked.get(path) == (stat.st_size, stat.st_mtime_ns)

    def _check(self, path: Path, entry: DataFile) -> Path:
        if self._seen(path):
            return path
        stat = path.stat()
        if stat.st_size != entry.size:
            raise RealDataError(path, f"refused: {stat.st_size} bytes, expected {entry.size}")
        digest = sha256_of(path)
        if digest != entry.sha256:
            raise RealDataError(path, f"refused: sha256 {digest}, expected {entry.sha256}")
        self._checked[path] = (stat.st_size, stat.st_mtime_ns)
        return path

    def _missing(self, entry: DataFile, why: str) -> RealDataError:
        return RealDataError(
            entry.name,
            f"not in {self.local} ({why}); set {ENV_LOCAL} to a copy of the real test data "
            f"or fetch every file with `{FETCH_COMMAND}`",
        )

    def _download(self, entry: DataFile) -> Path:
        cached = self.cache / entry.name
        if entry.url is None:
            if cached.is_file():
                return self._check(cached, entry)
            raise self._missing(entry, "a derived file with no public copy to download")
        if cached.is_file() and self._seen(cached):
            return cached
        downloader = pooch.HTTPDownloader(timeout=TIMEOUT_S)
        try:
            path = Path(self._pooch.fetch(entry.name, downloader=downloader))
        except ValueError:  # pooch: the download does not match the sha256
            raise RealDataError(
                entry.name, f"refused: the download from {entry.url} does not match its sha256"
            ) from None
        except OSError as err:  # requests' errors are OSErrors: no network, 404, timeout
            why = f"download from {entry.url} failed: {type(err).__name__}"
            raise self._missing(entry, why) from None
        return self._check(path, entry)


def path_or_exit(name: str) -> Path:
    """For scripts (the benchmarks): the checked file ``name``, or exit with its one line."""
    try:
        return TestData().path(name)
    except RealDataError as err:
        raise SystemExit(f"real test data: {err}") from None


def fetch(data: TestData) -> str:
    """Check or download every registered file; a summary line."""
    downloadable = data.fetchable()
    data.fetch_all(downloadable)
    left = sorted(set(data.files) - set(downloadable))
    size = sum(data.files[n].size for n in downloadable) / 1e6
    line = f"{len(downloadable)} real test files ({size:.1f} MB) checked in {data.local} or {data.cache}"
    if left:
        line += f"; no public copy of {name_some(left)}: set {ENV_LOCAL} to a copy"
    return line


def main(argv: list[str] | None = None, files: Mapping[str, DataFile] = REGISTRY) -> int:
    parser = argparse.ArgumentParser(prog="python -m histodetect.testdata", description=__doc__)
    parser.add_argument("command", choices=["fetch"], help="check or download every file")
    parser.add_argument("--local", type=Path, help=f"local copy (default: ${ENV_LOCAL})")
    parser.add_argument("--cache", type=Path, help=f"download folder (default: ${ENV_CACHE})")
    args = parser.parse_args(argv)
    pooch.get_logger().setLevel("WARNING")
    try:
        print(fetch(TestData(args.local, args.cache, files)))
    except RealDataError as err:
        print(f"histodetect.testdata: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
