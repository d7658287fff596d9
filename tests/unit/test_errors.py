"""Messages that list ids: at most ten named, the rest counted."""

from __future__ import annotations

import pandas as pd

from histodetect.errors import SHOWN, name_some
from histodetect.slides.tiling import excluded_report


def test_name_some_names_ten_and_counts_the_rest() -> None:
    assert name_some([]) == ""
    assert name_some(["a", "b"]) == "a, b"
    assert name_some(range(SHOWN)) == ", ".join(map(str, range(SHOWN)))
    assert name_some(range(SHOWN + 1)) == ", ".join(map(str, range(SHOWN))) + ", ... and 1 more"
    assert name_some(iter(range(12)), limit=2, sep="; ") == "0; 1; ... and 10 more"


def test_excluded_slides_line_stays_short_for_a_large_cohort() -> None:
    n = 10_000
    table = pd.DataFrame(
        {
            "slide_id": [f"s{i}" for i in range(n)],
            "path": [f"/data/s{i}.svs" for i in range(n)],
            "status": "failed",
            "error": "not a slide",
        }
    )
    line = excluded_report(table)
    assert line.startswith(
        f"{n} of {n} slides left out of the cohort: s0 (/data/s0.svs): not a slide; "
    )
    assert line.endswith("s9 (/data/s9.svs): not a slide; ... and 9990 more")
    assert len(line) < 600
