"""Fuzz the annotation readers, the patch-label reader and the sample-sheet check.

Every input either parses or raises the project's one-line ``InputError``; anything else
(a KeyError, a TypeError, a traceback from a library) is a bug and is printed with the input
that caused it. Inputs are mutations of valid files (byte flips, truncations, junk inserts,
field swaps) and structured garbage, drawn with a fixed seed for a fixed time budget.

    .venv/bin/python bench/fuzz_inputs.py --seconds 120

Last line: ``fuzz_cases=<n> crashes=<c>`` (c must be 0).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from histodetect.annotations.formats import ImportSettings, read_annotation_file
from histodetect.annotations.lesions import read_digilut_csv
from histodetect.cohort.patches import read_patch_labels
from histodetect.config.validation import read_sample_sheet
from histodetect.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SEEDS: dict[str, str] = {
    "digilut.csv": "filename,x1,x2,y1,y2,max_x,max_y\ns1.tiff,10,200,20,300,1000,1000\n",
    "qupath.geojson": json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[0, 0], [50, 0], [50, 40], [0, 0]]],
                    },
                    "properties": {"classification": {"name": "Tumor", "color": [255, 0, 0]}},
                },
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [5, 5]},
                    "properties": {},
                },
            ],
        }
    ),
    "asap.xml": (
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        '<Annotation Name="A" Type="Polygon" PartOfGroup="_0"><Coordinates>'
        '<Coordinate Order="0" X="1" Y="1"/><Coordinate Order="1" X="30" Y="1"/>'
        '<Coordinate Order="2" X="30" Y="20"/></Coordinates></Annotation>'
        "</Annotations></ASAP_Annotations>"
    ),
    "ncrf.json": json.dumps(
        {"positive": [{"name": "T", "vertices": [[0, 0], [9, 0], [9, 9]]}], "negative": []}
    ),
    "points.csv": "x,y,class\n10,10,mitosis\n20.5,30,mitosis\n",
    "labels.csv": "path,label,group_id\na.png,lung_n,g1\nb.png,lung_aca,g2\n",
    "samples.tsv": "slide_id\tpatient_id\tpath\tmpp\ns1\tp1\ts1.svs\t0.25\n",
}
JUNK = [
    "",
    "\x00",
    "NaN",
    "-1",
    "1e309",
    ",",
    "\t",
    '"',
    "{",
    "]",
    "<",
    "é",
    "\n\n",
    "nan,nan",
    "999999999999999999999",
]


def mutate(text: str, rng: random.Random) -> bytes:
    """One random mutation of a valid file."""
    data = bytearray(text.encode())
    kind = rng.randrange(6)
    if kind == 0 and data:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncate
        data = data[: rng.randrange(len(data) + 1)]
    elif kind == 2:  # insert junk
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.choice(JUNK).encode()
    elif kind == 3:  # replace a number-looking token
        tokens = text.replace(",", " , ").split(" ")
        i = rng.randrange(len(tokens))
        tokens[i] = rng.choice(JUNK)
        data = bytearray(" ".join(tokens).replace(" , ", ",").encode())
    elif kind == 4:  # duplicate a line
        lines = text.splitlines(keepends=True)
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
        data = bytearray("".join(lines).encode())
    else:  # random bytes
        data = bytearray(rng.randbytes(rng.randint(0, 200)))
    return bytes(data)


def readers(folder: Path) -> dict[str, Callable[[Path], object]]:
    settings = ImportSettings()
    return {
        "digilut.csv": lambda p: read_digilut_csv(p, {"s1.tiff": "s1", "s1": "s1"}),
        "qupath.geojson": lambda p: read_annotation_file(p, settings, mpp=0.5),
        "asap.xml": lambda p: read_annotation_file(p, settings, mpp=0.5),
        "ncrf.json": lambda p: read_annotation_file(p, settings, mpp=0.5, fmt="ncrf"),
        "points.csv": lambda p: read_annotation_file(p, settings, mpp=0.5, fmt="points"),
        "labels.csv": lambda p: read_patch_labels(p, check_files=False),
        "samples.tsv": lambda p: read_sample_sheet(
            p, ROOT / "workflow" / "schemas" / "samples.schema.yaml"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cases = crashes = 0
    per_reader = dict.fromkeys(SEEDS, 0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        funcs = readers(folder)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            name = rng.choice(list(SEEDS))
            path = folder / name
            path.write_bytes(mutate(SEEDS[name], rng))
            cases += 1
            per_reader[name] += 1
            try:
                funcs[name](path)
            except InputError as err:
                assert "\n" not in str(err), f"multi-line error: {err!r}"
            except Exception:
                crashes += 1
                print(f"CRASH in {name} on {path.read_bytes()!r}")
                traceback.print_exc(limit=-2)
    print("cases per reader:", per_reader)
    print(f"fuzz_cases={cases} crashes={crashes}")


if __name__ == "__main__":
    main()
