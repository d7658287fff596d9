"""A slide-label run's ``decision.json`` (the out-of-fold decision beside its fold models),
read and checked against this run before any job: torch-free, for the workflow's DAG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from histodetect.errors import InputError


def read_decision_record(path: str | Path, *, encoder_id: str, bag: str) -> dict[str, Any]:
    """The record (:func:`~histodetect.mil.ensemble.write_decision`), or one line naming
    ``path``: not a decision record, models trained on features of another encoder than
    ``encoder_id``, or on bags by another column than ``bag`` (``mil.bag``)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable decision record ({err})") from None
    if not isinstance(record, dict) or "decision" not in record:
        raise InputError(path, "not a decision record (no 'decision')")
    if record.get("encoder_id") != encoder_id:
        raise InputError(
            path,
            f"the models were trained on features {record.get('encoder_id')} but this "
            f"config extracts {encoder_id}: set the features section as in their run",
        )
    if record.get("bag") != bag:
        raise InputError(
            path, f"the models were trained on bags by {record.get('bag')} but mil.bag is {bag}"
        )
    return record
