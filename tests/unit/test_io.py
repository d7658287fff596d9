"""Atomic writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from histodetect.io import atomic_path


def test_atomic_path_success_creates(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.suffix == ".txt"
        assert tmp != target
        tmp.write_text("hello")
        assert not target.exists(), "nothing at the target until the body succeeds"
    assert target.read_text() == "hello"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_path_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(target)
    with atomic_path(target) as tmp:
        pd.DataFrame({"a": [2, 3]}).to_parquet(tmp)
    assert pd.read_parquet(target).a.tolist() == [2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_atomic_path_failure_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        tmp.write_text("new but broken")
        raise KeyError("x")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_atomic_path_body_writes_nothing(tmp_path: Path) -> None:
    # the temporary file exists (empty) while the body runs; success with no write gives an empty file
    target = tmp_path / "empty.txt"
    with atomic_path(target) as tmp:
        assert tmp.exists()
    assert target.read_text() == ""
