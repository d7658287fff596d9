"""decision.json of an earlier run, checked against this run before any job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from histodetect.errors import InputError
from histodetect.mil.records import read_decision_record


def test_a_decision_of_other_features_or_bags_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "decision.json"
    path.write_text(json.dumps({"decision": {}, "encoder_id": "enc-a", "bag": "patient"}))
    assert read_decision_record(path, encoder_id="enc-a", bag="patient")["bag"] == "patient"
    with pytest.raises(
        InputError, match="trained on features enc-a but this config extracts enc-b"
    ):
        read_decision_record(path, encoder_id="enc-b", bag="patient")
    with pytest.raises(InputError, match=r"bags by patient but mil\.bag is slide"):
        read_decision_record(path, encoder_id="enc-a", bag="slide")
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a readable decision record"):
        read_decision_record(path, encoder_id="enc-a", bag="patient")
    path.write_text("[]")
    with pytest.raises(InputError, match="not a decision record"):
        read_decision_record(path, encoder_id="enc-a", bag="patient")
