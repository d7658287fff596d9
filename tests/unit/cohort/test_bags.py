"""Slide and patient labels: the sheet's checks, and bags kept whole in the split and folds."""

from __future__ import annotations

import pandas as pd
import pytest

from histodetect.cohort.bags import bag_folds, bag_table, check_bag_folds, split_bags
from histodetect.errors import InputError, SplitError

pytestmark = pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")
MIL = {"bag": "slide", "task": "binary", "classes": None}


def sheet(labels: list[object], patients: list[str] | None = None, **columns) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "slide_id": [f"S{i:02d}" for i in range(n)],
            "patient_id": patients or [f"P{i:02d}" for i in range(n)],
            "path": [f"/d/S{i:02d}.svs" for i in range(n)],
            "label": labels,
            **columns,
        }
    )


def test_labels_become_codes_and_empty_ones_are_predict_only() -> None:
    table = bag_table(sheet(["neg", "pos", None, "pos"]), MIL, "s.tsv")
    assert list(table.y) == [0, 1, -1, 1]
    assert list(table.bag_id) == list(table.slide_id)


def test_a_label_outside_the_classes_is_one_line_naming_sheet_row_and_value() -> None:
    mil = {**MIL, "classes": ["neg", "pos"]}
    with pytest.raises(InputError) as err:
        bag_table(sheet(["neg", "pos", "tumour"]), mil, "s.tsv")
    assert str(err.value) == (
        "s.tsv: row 4: label 'tumour' is not one of the classes neg, pos (mil.classes)"
    )


def test_an_ordinal_grade_outside_its_range_is_refused() -> None:
    mil = {"bag": "slide", "task": "ordinal", "classes": [0, 1, 2, 3, 4, 5]}
    with pytest.raises(InputError, match=r"^s.tsv: row 4: grade 7 is outside the range 0-5"):
        bag_table(sheet([0, 5, 7, 2]), mil, "s.tsv")


def test_two_labels_in_one_patient_are_refused_when_the_patient_is_the_bag() -> None:
    labels, patients = ["a", "a", "b", "b"], ["P1", "P2", "P2", "P3"]
    assert list(bag_table(sheet(labels, patients), MIL, "s.tsv").y) == [0, 0, 1, 1]
    with pytest.raises(InputError) as err:
        bag_table(sheet(labels, patients), {**MIL, "bag": "patient"}, "s.tsv")
    assert str(err.value) == (
        "s.tsv: row 4: label 'b' differs from 'a' (row 3) in the same patient P2 (mil.bag: patient)"
    )


def test_a_bag_column_that_is_missing_is_named() -> None:
    with pytest.raises(InputError, match="no column 'biopsy'"):
        bag_table(sheet(["a", "b"]), {**MIL, "bag": "biopsy"}, "s.tsv")


def _cohort() -> pd.DataFrame:
    """30 patients, 2 biopsies each of 1-2 slides; biopsy B3 holds slides of two patients."""
    rows = []
    for p in range(30):
        for b in range(2):
            for _ in range(1 + (p + b) % 2):
                rows.append((f"P{p:02d}", f"B{p:02d}{b}", str((p + b) % 3)))
    patients, biopsies, labels = map(list, zip(*rows, strict=True))
    biopsies[5] = "B000"  # ties P01 to P00 through a shared bag
    labels[5] = labels[0]
    labels[7] = None  # predict only, in a labelled biopsy
    labels = [None if p == "P29" else v for p, v in zip(patients, labels, strict=True)]
    return sheet(labels, patients, biopsy=biopsies)


@pytest.mark.parametrize("bag", ["slide", "patient", "biopsy"])
def test_bags_and_patients_never_cross_the_split_or_the_folds(bag: str) -> None:
    mil = {"bag": bag, "task": "multiclass", "classes": None}
    samples = _cohort()
    if bag == "patient":
        grade = samples.patient_id.str[1:].astype(int).mod(3).astype(str)
        samples["label"] = grade.where(samples.patient_id != "P29")
        samples.loc[7, "label"] = None
    table = bag_table(samples, mil, "s.tsv")
    split = split_bags(table, test_fraction=0.3, seed=1, source="s")
    folds = bag_folds(split, k=3, seed=1, source="s")
    assert set(folds.patient_id[folds.split == "predict"]) == {"P29"}
    # row 7 has no label: predict only (bag: slide), else the label of its bag's other slide
    assert folds.loc[7, "y"] == {"slide": -1, "patient": folds.y[6], "biopsy": folds.y[8]}[bag]
    assert folds.loc[7, "split"] == folds.loc[6, "split"]  # goes with its patient
    for unit in ("bag_id", "patient_id", "group"):
        assert (folds.groupby(unit).split.nunique() == 1).all()
        assert (folds[folds.split == "train"].groupby(unit).fold.nunique() == 1).all()
    assert sorted(folds.loc[folds.split == "train", "fold"].unique()) == [0, 1, 2]
    assert (folds.loc[folds.split != "train", "fold"] == -1).all()


def test_a_tampered_fold_table_is_refused() -> None:
    table = bag_table(_cohort(), {"bag": "biopsy", "task": "multiclass", "classes": None}, "s")
    split = split_bags(table, test_fraction=0.3, seed=1, source="s")
    folds = bag_folds(split, k=3, seed=1, source="s")
    check_bag_folds(folds, "folds.tsv")  # as made: accepted
    train = folds[folds.split == "train"]
    two_slides = train.bag_id[train.bag_id.duplicated()].iloc[0]
    moved = folds.copy()
    row = moved.index[moved.bag_id == two_slides][0]
    moved.loc[row, "fold"] = (moved.loc[row, "fold"] + 1) % 3
    bag = rf"folds.tsv: bag\(s\) {two_slides} fall in more than one fold"
    with pytest.raises(SplitError, match=bag):
        check_bag_folds(moved, "folds.tsv")
    leaked = folds.copy()
    test_patient = folds.patient_id[folds.split == "test"].iloc[0]
    leaked.loc[leaked.index[leaked.patient_id == test_patient][0], ["split", "fold"]] = ["train", 0]
    with pytest.raises(SplitError, match="fall in more than one split"):
        check_bag_folds(leaked, "folds.tsv")


REGRESSION = {"bag": "slide", "task": "regression", "classes": None}


def test_a_numeric_label_is_the_target_and_its_quartile_the_stratum() -> None:
    table = bag_table(sheet([0.5, 3.0, None, 1.5, 10, 2]), REGRESSION, "s.tsv")
    assert list(table.target.fillna(-9)) == [0.5, 3.0, -9, 1.5, 10.0, 2.0]
    assert list(table.y) == [0, 2, -1, 0, 3, 1]  # quartiles of 5 values; -1: predict only


def test_a_label_that_is_not_a_number_is_one_line_naming_sheet_row_and_value() -> None:
    with pytest.raises(InputError) as err:
        bag_table(sheet(["0.5", "1", "high"]), REGRESSION, "s.tsv")
    assert str(err.value) == ("s.tsv: row 4: label 'high' is not a number (mil.task: regression)")


def test_numeric_bags_stay_whole_and_stratified_in_the_split_and_folds() -> None:
    labels = [float(i // 2) for i in range(16)]  # one value per patient
    patients = [f"P{i // 2:02d}" for i in range(16)]
    table = bag_table(sheet(labels, patients), {**REGRESSION, "bag": "patient"}, "s.tsv")
    split = split_bags(table, test_fraction=0.25, seed=1, source="s.tsv")
    folds = bag_folds(split, k=2, seed=1, source="s.tsv")
    check_bag_folds(folds, "s.tsv")
    assert folds.target.notna().all() and (folds.split == "test").sum() == 4


SURVIVAL = {"bag": "patient", "task": "survival", "classes": None, "time_column": "time",
            "event_column": "event"}  # fmt: skip


def test_a_patients_time_and_event_are_its_target_and_stratum() -> None:
    patients = ["P0", "P0", "P1", "P2", "P3"]
    s = sheet([""] * 5, patients, time=[12, 12, 3.5, None, 0], event=[1, 1, 0, None, 1])
    table = bag_table(s, SURVIVAL, "s.tsv")
    assert list(table.label) == ["12:1", "12:1", "3.5:0", "", "0:1"]
    assert list(table.target.fillna(-9)) == [12.0, 12.0, 3.5, -9, 0.0]
    assert list(table.event) == [1, 1, 0, -1, 1] and list(table.y) == [1, 1, 0, -1, 1]


@pytest.mark.parametrize(
    ("time", "event", "message"),
    [
        ([5, -1], [1, 0], "s.tsv: row 3: time '-1' is not a time >= 0 (mil.task: survival)"),
        ([5, None], [1, 0], "s.tsv: row 3: time '' is not a time >= 0 (mil.task: survival)"),
        ([5, "soon"], [1, 0], "s.tsv: row 3: time 'soon' is not a time >= 0 (mil.task: survival)"),
        ([5, 6], [1, 2], "s.tsv: row 3: event '2' is not 0 or 1 (mil.task: survival)"),
        ([5, 6], [1, None], "s.tsv: row 3: event '' is not 0 or 1 (mil.task: survival)"),
    ],
)
def test_a_bad_time_or_event_is_one_line_naming_sheet_row_and_value(
    time: list, event: list, message: str
) -> None:
    with pytest.raises(InputError) as err:
        bag_table(sheet(["", ""], time=time, event=event), SURVIVAL, "s.tsv")
    assert str(err.value) == message


def test_two_outcomes_of_one_patient_or_slide_bags_are_refused_in_one_line() -> None:
    s = sheet(["", ""], ["P0", "P0"], time=[5, 6], event=[1, 1])
    with pytest.raises(InputError) as err:
        bag_table(s, SURVIVAL, "s.tsv")
    assert str(err.value) == (
        "s.tsv: row 3: outcome (time:event) '6:1' differs from '5:1' (row 2) in the same "
        "patient P0 (mil.bag: patient)"
    )
    with pytest.raises(
        InputError, match=r"config: mil\.task survival needs one outcome per patient"
    ):
        bag_table(sheet(["", ""], time=[5, 6], event=[1, 0]), {**SURVIVAL, "bag": "slide"}, "s")
    with pytest.raises(
        InputError, match=r"s\.tsv: mil\.task survival: the sheet has no column 'os'"
    ):
        bag_table(sheet([""], time=[5], event=[1]), {**SURVIVAL, "time_column": "os"}, "s.tsv")


def test_survival_bags_stay_whole_through_the_split_and_folds() -> None:
    patients = [f"P{i // 2:02d}" for i in range(16)]
    times = [float(i // 2 + 1) for i in range(16)]
    events = [(i // 2) % 2 for i in range(16)]
    s = sheet([""] * 16, patients, time=times, event=events)
    table = bag_table(s, SURVIVAL, "s.tsv")
    split = split_bags(table, test_fraction=0.25, seed=1, source="s.tsv")
    folds = bag_folds(split, k=2, seed=1, source="s.tsv")
    check_bag_folds(folds, "s.tsv")
    assert folds.target.notna().all() and set(folds.event) == {0, 1}
