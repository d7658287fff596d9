"""Peak memory and time of reading a ~200 MB Aperio ImageScope XML: whole tree against stream.

    PYTHONPATH=src .venv/bin/python bench/annotation_xml.py [--outlines 300000] [--workdir DIR]

Writes an ImageScope XML of ``--outlines`` nucleus-like outlines (10 vertices each, radius
8-16 px, as ImageScope writes them: every attribute of ``<Region>``, ``Z="0"``, CRLF) in two
layers over a 120,000 x 90,000 px slide at 0.2527 um/px, then reads it twice, each side in a
fresh subprocess whose peak RSS is its own ``ru_maxrss`` (``os.wait4`` on that child):

- ``tree``: the reader as it was before streaming: ``ET.parse`` of the whole file into an
  element tree, then each layer's ``Regions/Region`` through the package's same conversion
  (``_vertices``, ``region_geometry``, ``region_class``, ``_cut_holes``, ``_table``); the tree
  is held until the table is made. Kept here only, for the comparison.
- ``streamed``: the package's :func:`histodetect.annotations.formats.read_annotation_file`
  (``aperio``), which streams the file (:mod:`histodetect.annotations.xml_stream`) and drops
  each region once its outline is kept.

Both import the same modules before the clock and the read; seconds are the read alone. The
outline counts must be equal (300,000 each). Last line (2 cores shared with other work,
Python 3.11, 23 GiB machine, no GPU)::

    xml_mb=206 peak_mib_tree=2144 peak_mib_streamed=382 memory_ratio=5.61 seconds_tree=25.2 seconds_streamed=24.2

The streamed side's peak is the imports (about 120 MiB) plus the 300,000 shapely outlines of
the table it returns; the tree side holds the element tree (about 1.8 GiB) besides.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

MPP = 0.2527
WIDTH, HEIGHT = 120_000, 90_000
VERTICES = 10
REGION = (
    '<Region Id="{id}" Type="0" Zoom="0.5" Selected="0" ImageLocation="" ImageFocus="-1" '
    'Length="{length:.1f}" Area="{area:.1f}" LengthMicrons="{lum:.1f}" AreaMicrons="{aum:.1f}" '
    'Text="" NegativeROA="0" InputRegionId="0" Analyze="1" DisplayId="{id}">\r\n'
    "<Attributes/>\r\n<Vertices>\r\n{vertices}</Vertices>\r\n</Region>\r\n"
)


def write_xml(path: Path, outlines: int, seed: int = 0) -> None:
    """ImageScope XML of ``outlines`` jittered 10-gons in two layers, written in chunks."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * math.pi, VERTICES, endpoint=False)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(f'<?xml version="1.0" encoding="utf-8"?>\r\n<Annotations MicronsPerPixel="{MPP}">\r\n')  # fmt: skip
        per_layer = [outlines // 2, outlines - outlines // 2]
        for layer, n in enumerate(per_layer, 1):
            f.write(f'<Annotation Id="{layer}" Name="Nuclei {layer}" LineColor="65280">\r\n')
            f.write('<Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>\r\n')
            f.write("<Regions>\r\n")
            centres = rng.uniform((40, 40), (WIDTH - 40, HEIGHT - 40), size=(n, 2))
            radii = rng.uniform(8, 16, size=(n, 1)) * rng.uniform(0.8, 1.2, size=(n, VERTICES))
            xs = centres[:, :1] + radii * np.cos(angles)
            ys = centres[:, 1:] + radii * np.sin(angles)
            for i in range(n):
                vertices = "".join(
                    f'<Vertex X="{x:.1f}" Y="{y:.1f}" Z="0"/>\r\n'
                    for x, y in zip(xs[i], ys[i], strict=True)
                )
                r = float(radii[i].mean())
                f.write(REGION.format(
                    id=i + 1, length=2 * math.pi * r, area=math.pi * r * r,
                    lum=2 * math.pi * r * MPP, aum=math.pi * r * r * MPP**2, vertices=vertices,
                ))  # fmt: skip
            f.write("</Regions>\r\n</Annotation>\r\n")
        f.write("</Annotations>\r\n")


def read_whole_tree(path: Path) -> int:
    """The pre-streaming reader: the whole element tree, then the package's conversion."""
    from histodetect.annotations.aperio import (
        POINTS,
        REGION_TYPES,
        _cut_holes,
        _vertices,
        region_class,
        region_geometry,
    )
    from histodetect.annotations.formats import ImportSettings, StrayItem, _table

    settings = ImportSettings()
    root = ET.parse(path).getroot()
    positives: list[list] = []
    negatives: list = []
    stray: list[str] = []
    for i, layer in enumerate(root.findall("Annotation"), 1):
        for j, region in enumerate(layer.findall("Regions/Region"), 1):
            item = f"Annotation {layer.get('Id', i)} Region {region.get('Id', j)}"
            kind = REGION_TYPES[(region.get("Type") or "0").strip().lower()]
            try:
                xy = _vertices(region, path, item, settings.scale)
                geom = region_geometry(kind, xy, MPP, settings, path, item)
            except StrayItem:
                stray.append(item)
                continue
            if region.get("NegativeROA", "0").strip() == "1" and kind != POINTS:
                negatives.append((geom, item))
            else:
                positives.append([region_class(layer, region, settings), geom, item])
    _cut_holes(positives, negatives, path)
    table = _table([tuple(r) for r in positives if not r[1].is_empty], path, stray)
    del root
    return len(table)


def read_streamed(path: Path) -> int:
    """The package's reader (streamed)."""
    from histodetect.annotations.formats import ImportSettings, read_annotation_file

    return len(read_annotation_file(path, ImportSettings(), mpp=MPP, fmt="aperio"))


def child(side: str, path: Path) -> None:
    """One side in this process: print ``{"outlines", "seconds"}`` as one JSON line."""
    import histodetect.annotations.aperio  # noqa: F401  (imports before the clock, both sides)

    start = time.perf_counter()
    n = (read_whole_tree if side == "tree" else read_streamed)(path)
    print(json.dumps({"outlines": n, "seconds": time.perf_counter() - start}))


def run_side(side: str, path: Path) -> dict:
    """Run ``side`` in a fresh subprocess; its result with its own peak RSS in MiB."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--side", side, str(path)], stdout=subprocess.PIPE, text=True
    )
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{side} side failed ({proc.returncode})")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outlines", type=int, default=300_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--side", choices=["tree", "streamed"], help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args.side, args.path)
        return
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        path = Path(folder) / "nuclei.xml"
        write_xml(path, args.outlines)
        xml_mb = path.stat().st_size / 1e6
        print(f"wrote {path.name}: {args.outlines} outlines, {xml_mb:.0f} MB", flush=True)
        tree, streamed = run_side("tree", path), run_side("streamed", path)
    for side, r in (("tree", tree), ("streamed", streamed)):
        print(f"{side}: {r['outlines']} outlines, peak {r['peak_mib']:.0f} MiB, {r['seconds']:.1f} s")  # fmt: skip
    if tree["outlines"] != streamed["outlines"]:
        raise SystemExit("outline counts differ")
    print(
        f"xml_mb={xml_mb:.0f} peak_mib_tree={tree['peak_mib']:.0f} "
        f"peak_mib_streamed={streamed['peak_mib']:.0f} "
        f"memory_ratio={tree['peak_mib'] / streamed['peak_mib']:.2f} "
        f"seconds_tree={tree['seconds']:.1f} seconds_streamed={streamed['seconds']:.1f}"
    )


if __name__ == "__main__":
    main()
