"""Feature files: one h5 per slide in the layout CLAM and TRIDENT write, and their checks.

Datasets: ``features`` (float16, tiles x dim), ``coords`` (int64, tiles x 2: level-0 x, y of
each tile's top-left corner), ``row``, ``col`` (the tile grid) and ``tissue``. Attributes (all
written by :func:`write_features`, compared by :func:`read_features`):

    format, slide_id, status (``ok`` or ``failed``), error, encoder, encoder_id,
    settings_hash, weights_sha256, input_px, mean, std, tile_um, tile_px, size0, stride0,
    mpp (um/px of the read level), histodetect_version, n_tiles, dim
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

import histodetect
from histodetect.errors import InputError, name_some
from histodetect.features.settings import FORMAT, file_sha256
from histodetect.io import atomic_path

log = logging.getLogger(__name__)
GRID = ("row", "col", "tissue")


@dataclass
class SlideFeatures:
    """A slide's tile embeddings, in the order of its tile table."""

    features: np.ndarray
    coords: np.ndarray
    attrs: dict[str, Any]
    grid: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)


def write_features(path: str | os.PathLike[str], data: SlideFeatures) -> None:
    """Write ``data`` to ``path`` under a temporary name, renamed only once complete."""
    features = np.asarray(data.features, np.float16)
    coords = np.asarray(data.coords, np.int64).reshape(-1, 2)
    if len(features) != len(coords):
        raise ValueError(f"{len(features)} feature rows for {len(coords)} coordinates")
    attrs = {"format": FORMAT, **data.attrs, "n_tiles": len(features)}
    attrs["dim"] = int(features.shape[1]) if features.ndim == 2 else 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("features", data=features, chunks=_chunks(features))
        h5.create_dataset("coords", data=coords)
        for name in GRID:
            if name in data.grid:
                h5.create_dataset(name, data=np.asarray(data.grid[name]))
        for key, value in attrs.items():
            h5.attrs[key] = "" if value is None else value


def _chunks(features: np.ndarray) -> tuple[int, int] | None:
    if features.ndim != 2 or not features.size:
        return None
    return (min(len(features), max(1, (1 << 20) // (2 * features.shape[1]))), features.shape[1])


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A feature file's attributes (numpy scalars and arrays as Python values)."""
    try:
        with h5py.File(path, "r") as h5:
            return {k: _plain(v) for k, v in h5.attrs.items()}
    except OSError as err:
        raise InputError(path, f"not a readable h5 file ({err})") from None


def read_features(
    path: str | os.PathLike[str], expect: Mapping[str, Any] | None = None
) -> SlideFeatures:
    """Read a file of :func:`write_features` and check it is what the run expects.

    Raises:
        InputError: naming the file and the first attribute that differs from ``expect``
            (``encoder_id``, ``tile_um``, ...), a file of another format, or one whose
            extraction failed (its error is given).
    """
    attrs = check_attrs(path, read_attrs(path), expect)
    if attrs.get("status") != "ok":
        raise InputError(path, f"feature extraction failed for this slide ({attrs.get('error')})")
    with h5py.File(path, "r") as h5:
        grid = {name: h5[name][:] for name in GRID if name in h5}
        return SlideFeatures(h5["features"][:], h5["coords"][:], attrs, grid)


def check_attrs(
    path: str | os.PathLike[str], attrs: dict[str, Any], expect: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``attrs`` when they are a feature file's and match ``expect``, else one InputError."""
    if attrs.get("format") != FORMAT:
        raise InputError(path, f"not a histodetect feature file (format {attrs.get('format')!r})")
    for key, want in (expect or {}).items():
        have = attrs.get(key)
        if not _same(have, want):
            raise InputError(
                path,
                f"attribute {key} is {have!r} but this run expects {want!r}: "
                "made with other settings; delete it or extract again",
            )
    return attrs


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, float | int) and not isinstance(want, bool):
        return isinstance(have, float | int) and bool(np.isclose(have, want, rtol=1e-6))
    if isinstance(want, list | tuple):
        return isinstance(have, list) and np.allclose(have, want, rtol=1e-6)
    return have == want


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def read_foreign(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``features`` and ``coords`` of an h5 made by CLAM, TRIDENT or another tool.

    A leading axis of length 1 (some writers store ``(1, n, dim)``) is dropped.

    Raises:
        InputError: naming the file when it lacks either dataset or their lengths differ.
    """
    try:
        with h5py.File(path, "r") as h5:
            missing = [name for name in ("features", "coords") if name not in h5]
            if missing:
                raise InputError(path, f"no dataset {' or '.join(missing)} (CLAM/TRIDENT layout)")
            features, coords = np.asarray(h5["features"][:]), np.asarray(h5["coords"][:])
    except OSError as err:
        raise InputError(path, f"not a readable h5 file ({err})") from None
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    if coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if features.ndim != 2 or coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(
            path, f"features {features.shape} and coords {coords.shape}: expected (n, dim), (n, 2)"
        )
    if len(features) != len(coords):
        raise InputError(path, f"{len(features)} feature rows but {len(coords)} coordinates")
    return features, coords


def import_paths(folder: str | os.PathLike[str], slide_ids: Iterable[str]) -> dict[str, Path]:
    """``<folder>/<slide_id>.h5`` for every slide, checked to exist.

    Raises:
        InputError: naming the folder, the first few missing slides and how many more.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "features.import is not a folder")
    paths = {s: folder / f"{s}.h5" for s in slide_ids}
    missing = [s for s, p in paths.items() if not p.is_file()]
    if missing:
        raise InputError(
            folder,
            f"no feature file for {len(missing)} slide(s) of the sheet: {name_some(missing)}",
        )
    return paths


def import_features(
    foreign: str | os.PathLike[str], out: str | os.PathLike[str], *, slide_id: str, encoder_id: str
) -> SlideFeatures:
    """Copy a CLAM/TRIDENT h5 into this layout (float16), recording where it came from.

    The source file's own attributes (patch size, magnification, ...) are kept as JSON in
    ``source_attrs``; its sha256 as ``source_sha256``.
    """
    features, coords = read_foreign(foreign)
    with h5py.File(foreign, "r") as h5:
        source_attrs = {
            name: {k: _plain(v) for k, v in h5[name].attrs.items()}
            for name in ("/", "features", "coords")
            if len(h5[name].attrs)
        }
    attrs = {
        "slide_id": slide_id,
        "status": "ok",
        "error": "",
        "encoder": "imported",
        "encoder_source": "import",
        "encoder_id": encoder_id,
        "settings_hash": encoder_id.rsplit("-", 1)[-1],
        "source": str(Path(foreign).resolve()),
        "source_sha256": file_sha256(foreign),
        "source_attrs": json.dumps(source_attrs, default=str),
        "histodetect_version": histodetect.__version__,
    }
    data = SlideFeatures(features, coords, attrs)
    write_features(out, data)
    return data


def features_summary(
    paths: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    expect: Mapping[str, Any] | None = None,
) -> None:
    """One row per feature file (slide, status, tiles, dim, error) as a TSV; failures warned.

    Every file is checked against ``expect`` first (see :func:`read_features`).
    """
    rows = []
    for path in paths:
        attrs = check_attrs(path, read_attrs(path), expect)
        rows.append(
            {k: attrs.get(k, "") for k in ("slide_id", "status", "n_tiles", "dim", "error")}
        )
    table = pd.DataFrame(rows, columns=["slide_id", "status", "n_tiles", "dim", "error"])
    failed = table[table.status != "ok"]
    if len(failed):
        named = name_some(failed.slide_id.astype(str))
        log.warning("no features for %d slide(s): %s (see %s)", len(failed), named, out)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
