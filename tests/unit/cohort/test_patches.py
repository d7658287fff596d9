"""labels.csv of a folder of patches: checks, grouped folds, per-fold tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histodetect.cohort.patches import (
    assign_folds,
    fold_tables,
    read_patch_labels,
    subsample_groups,
    write_patch_folds,
)
from histodetect.errors import InputError


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """30 groups of 3 tiny PNGs, 10 groups per class (tumour, normal, stroma)."""
    rows = []
    for g in range(30):
        cls = ("tumour", "normal", "stroma")[g % 3]
        (tmp_path / cls).mkdir(exist_ok=True)
        for i in range(3):
            rel = f"{cls}/g{g}_{i}.png"
            Image.fromarray(np.full((8, 8, 3), g, np.uint8)).save(tmp_path / rel)
            rows.append((rel, cls, f"g{g}"))
    pd.DataFrame(rows, columns=["path", "label", "group_id"]).to_csv(
        tmp_path / "labels.csv", index=False
    )
    return tmp_path


def test_reads_relative_paths_and_encodes_labels(folder: Path) -> None:
    df = read_patch_labels(folder / "labels.csv")
    assert sorted(df.class_name.unique()) == ["normal", "stroma", "tumour"]
    assert (df.label == df.class_name.map({"normal": 0, "stroma": 1, "tumour": 2})).all()
    assert Path(df.path[0]).is_absolute() and Path(df.path[0]).is_file()
    assert (df.patient_id == df.group_id).all()
    ordered = read_patch_labels(folder / "labels.csv", ["tumour", "normal", "stroma"])
    assert ordered.loc[ordered.class_name == "tumour", "label"].eq(0).all()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.drop(columns="group_id"), "lacks column.s. group_id"),
        (lambda d: d.assign(path=d.path.where(d.index != 4, "tumour/nope.png")), "row 6: no file"),
        (lambda d: d.assign(label=d.label.where(d.index != 2, "")), "row 4: empty label"),
    ],
)
def test_bad_tables_fail_with_one_line(
    folder: Path, edit: Callable[[pd.DataFrame], pd.DataFrame], message: str
) -> None:
    csv = folder / "labels.csv"
    edit(pd.read_csv(csv)).to_csv(csv, index=False)
    with pytest.raises(InputError, match=message) as err:
        read_patch_labels(csv)
    assert str(err.value).startswith(str(csv)) and "\n" not in str(err.value)


def test_unknown_class_is_refused(folder: Path) -> None:
    with pytest.raises(InputError, match="'stroma' not in"):
        read_patch_labels(folder / "labels.csv", ["tumour", "normal"])


def test_folds_keep_groups_together(folder: Path) -> None:
    df = assign_folds(read_patch_labels(folder / "labels.csv"), k=3, seed=1)
    assert (df.groupby("group_id").fold.nunique() == 1).all()
    assert df.groupby("fold").group_id.nunique().tolist() == [10, 10, 10]
    assert (df.groupby("fold").label.nunique() == 3).all()  # stratified by class
    train, val = fold_tables(df, fold=1, tile_px=16)
    assert set(val.fold) == {1} and not set(train.group_id) & set(val.group_id)
    assert (train.tile_px == 16).all() and len(train) + len(val) == len(df)


def test_subsample_groups(folder: Path) -> None:
    df = read_patch_labels(folder / "labels.csv")
    one = subsample_groups(df, per_group=1, seed=0)
    assert len(one) == 30 and one.group_id.is_unique
    assert subsample_groups(df, per_group=1, seed=0).equals(one)
    assert subsample_groups(df, per_group=None, seed=0) is df


def test_write_patch_folds(folder: Path, tmp_path: Path) -> None:
    pairs = [(tmp_path / f"f{k}/train.parquet", tmp_path / f"f{k}/val.parquet") for k in range(2)]
    write_patch_folds(folder / "labels.csv", tmp_path / "folds.tsv", pairs, tile_px=8, seed=0)
    vals = [pd.read_parquet(v) for _, v in pairs]
    assert sum(len(v) for v in vals) == 90
    assert not set(vals[0].group_id) & set(vals[1].group_id)
    assert pd.read_csv(tmp_path / "folds.tsv", sep="\t").fold.nunique() == 2


def test_seen_images_by_path_content_and_group(tmp_path: Path) -> None:
    from histodetect.cohort.patches import git_blob_sha1, seen_images

    files = {}
    for name, data in {"a": b"one", "b": b"two", "c": b"one", "d": b"three", "e": b"four"}.items():
        files[name] = tmp_path / f"{name}.png"
        files[name].write_bytes(data)
    assert (
        git_blob_sha1(files["a"]) == "43dd47ea691c90a5fa7827892c70241913351963"
    )  # git hash-object
    seen = pd.DataFrame({"path": [str(files["a"]), str(files["b"])], "group_id": ["g1", "g2"]})
    new = pd.DataFrame(
        {"path": [str(files[k]) for k in "bcde"], "group_id": ["g9", "g8", "g2", "g7"]}
    )
    hit = seen_images(seen, new)
    assert dict(zip(hit.path.map(lambda p: Path(p).stem), hit.seen_by, strict=True)) == {
        "b": "path", "c": "content", "d": "group",
    }  # fmt: skip
