"""Patient-level splits and folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from histodetect.cohort.splits import (
    assert_patients_disjoint,
    assert_training_only,
    make_folds,
    split_patients,
    training_split,
)
from histodetect.errors import SplitError

pytestmark = pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")


def sheet(
    n_patients: int,
    n_positive: int,
    slides_per_patient: int | list[int] = 2,
    centres: int = 0,
) -> tuple[pd.DataFrame, set[str]]:
    """Sample sheet; the first ``n_positive`` patients have a lesion on their first slide."""
    per = (
        slides_per_patient
        if isinstance(slides_per_patient, list)
        else [slides_per_patient] * n_patients
    )
    rows, positive = [], set()
    for p in range(n_patients):
        for s in range(per[p]):
            sid = f"P{p:03d}_S{s}"
            row = {"slide_id": sid, "patient_id": f"P{p:03d}", "path": f"/d/{sid}.svs"}
            if centres:
                row["centre"] = f"C{p % centres}"
            rows.append(row)
            if p < n_positive and s == 0:
                positive.add(sid)
    return pd.DataFrame(rows), positive


def patients_on_both_sides(table: pd.DataFrame, by: str) -> int:
    return int((table.groupby("patient_id")[by].nunique() > 1).sum())


# --- split_patients -------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    per=st.lists(st.integers(1, 4), min_size=4, max_size=25),
    frac_pos=st.floats(0.0, 1.0),
    test_fraction=st.sampled_from([0.1, 0.2, 0.25, 0.3, 0.5]),
    seed=st.integers(0, 10_000),
)
def test_split_never_shares_a_patient(
    per: list[int], frac_pos: float, test_fraction: float, seed: int
) -> None:
    n = len(per)
    samples, positive = sheet(n, round(frac_pos * n), per)
    samples = samples.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # interleave
    out = split_patients(samples, positive, test_fraction=test_fraction, seed=seed)
    assert len(out) == len(samples)
    assert set(out.split) == {"train", "test"}
    n_test = out.loc[out.split == "test", "patient_id"].nunique()
    assert abs(n_test - test_fraction * n) <= 1
    assert patients_on_both_sides(out, "split") == 0
    pd.testing.assert_frame_equal(out.drop(columns="split"), samples)


def test_split_deterministic_for_seed() -> None:
    samples, positive = sheet(30, 8, 3)
    a = split_patients(samples, positive, test_fraction=0.2, seed=7)
    b = split_patients(samples, positive, test_fraction=0.2, seed=7)
    pd.testing.assert_frame_equal(a, b)
    others = [
        split_patients(samples, positive, test_fraction=0.2, seed=s).split.tolist()
        for s in range(1, 6)
    ]
    assert any(o != a.split.tolist() for o in others), "the seed changes the split"


def test_split_test_size_about_fraction() -> None:
    samples, positive = sheet(40, 10, 2)
    out = split_patients(samples, positive, test_fraction=0.25, seed=0)
    n_test = out.loc[out.split == "test", "patient_id"].nunique()
    assert 7 <= n_test <= 13


@pytest.mark.parametrize(
    ("n_patients", "n_positive", "fraction", "expected"),
    [(10, 4, 0.4, 4), (10, 4, 0.34, 3), (20, 6, 0.15, 3), (12, 5, 0.6, 7), (7, 3, 0.3, 2)],
)
@pytest.mark.parametrize("seed", range(4))
def test_split_test_share_is_the_configured_one(
    n_patients: int, n_positive: int, fraction: float, expected: int, seed: int
) -> None:
    # the share was quantised to 1 / round(1 / f) before: 0.4 gave 0.5, 0.6 gave 0.5
    samples, positive = sheet(n_patients, n_positive, [1 + p % 2 for p in range(n_patients)])
    out = split_patients(samples, positive, test_fraction=fraction, seed=seed)
    test = out[out.split == "test"]
    assert test.patient_id.nunique() == expected
    # stratified: the lesion patients' share is the configured one within one patient too
    n_lesion = test.loc[test.slide_id.isin(positive), "patient_id"].nunique()
    assert abs(n_lesion - fraction * n_positive) < 1


@pytest.mark.parametrize("seed", range(8))
def test_split_stratified_test_has_lesion_patient(seed: int) -> None:
    samples, positive = sheet(20, 4, 2)
    out = split_patients(samples, positive, test_fraction=0.25, seed=seed)
    test = out[out.split == "test"]
    train = out[out.split == "train"]
    assert test.slide_id.isin(positive).any()
    assert train.slide_id.isin(positive).any()
    # 4 lesion patients over 4 splits: exactly one lands in test
    assert test.loc[test.slide_id.isin(positive), "patient_id"].nunique() == 1


@pytest.mark.parametrize("seed", range(6))
def test_split_honours_centre(seed: int) -> None:
    # 3 centres x 8 patients each; stratifying on centre puts every centre in test
    samples, positive = sheet(24, 12, 1, centres=3)
    out = split_patients(samples, positive, test_fraction=0.25, seed=seed)
    test = out[out.split == "test"]
    assert set(test.centre) == {"C0", "C1", "C2"}
    assert test.centre.value_counts().tolist() == [2, 2, 2]
    assert patients_on_both_sides(out, "split") == 0


def test_split_centre_stratification_matters() -> None:
    samples, positive = sheet(24, 12, 1, centres=3)

    def spread(seed: int, by: str | None) -> list[int]:
        out = split_patients(samples, positive, test_fraction=0.25, seed=seed, stratify_by=by)
        return out[out.split == "test"].centre.value_counts().tolist()

    assert all(spread(s, "centre") == [2, 2, 2] for s in range(10))
    assert any(spread(s, None) != [2, 2, 2] for s in range(10))


def test_split_without_centre_column_works() -> None:
    samples, positive = sheet(12, 4, 2)
    assert "centre" not in samples.columns
    out = split_patients(samples, positive, test_fraction=0.25, seed=0, stratify_by="centre")
    assert set(out.split) == {"train", "test"}


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])  # 0: none held out, see below
def test_split_rejects_bad_fraction(fraction: float) -> None:
    samples, positive = sheet(10, 3)
    with pytest.raises(SplitError, match="test_fraction"):
        split_patients(samples, positive, test_fraction=fraction, seed=0)


def test_split_too_few_patients() -> None:
    samples, positive = sheet(1, 1, 3)
    with pytest.raises(SplitError, match="1 patient"):
        split_patients(samples, positive, test_fraction=0.2, seed=0)
    # three patients at 0.2: one of them is the nearest share that leaves training patients
    samples, positive = sheet(3, 1, 3)
    out = split_patients(samples, positive, test_fraction=0.2, seed=0)
    assert out.loc[out.split == "test", "patient_id"].nunique() == 1


# --- make_folds -----------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (3, 1), (4, 2), (5, 3)])
def test_make_folds(k: int, seed: int) -> None:
    train, positive = sheet(25, 6, [1 + (p % 3) for p in range(25)])
    out = make_folds(train, positive, k=k, seed=seed)
    assert len(out) == len(train)
    assert set(out.fold) == set(range(k))
    assert (out.fold >= 0).all()
    assert patients_on_both_sides(out, "fold") == 0
    for f in range(k):
        assert out.loc[out.fold == f, "slide_id"].isin(positive).any(), f
    again = make_folds(train, positive, k=k, seed=seed)
    pd.testing.assert_series_equal(out.fold, again.fold)


def test_make_folds_refuses_more_folds_than_positive_patients() -> None:
    # 3 positive slides but only 2 positive patients
    train, positive = sheet(10, 2, 2)
    positive.add("P000_S1")
    make_folds(train, positive, k=2, seed=0)
    with pytest.raises(SplitError, match="folds=3 exceeds the 2"):
        make_folds(train, positive, k=3, seed=0)


def test_make_folds_rejects_k_below_two() -> None:
    train, positive = sheet(10, 5)
    with pytest.raises(SplitError, match=">= 2"):
        make_folds(train, positive, k=1, seed=0)


# --- assert_patients_disjoint ---------------------------------------------------------------


def test_assert_patients_disjoint() -> None:
    ok = pd.DataFrame({"patient_id": ["a", "a", "b"], "split": ["train", "train", "test"]})
    assert_patients_disjoint(ok, "split")
    leaked = pd.DataFrame(
        {"patient_id": ["a", "a", "b", "c", "c"], "split": ["train", "test", "test", "x", "x"]}
    )
    with pytest.raises(SplitError) as info:
        assert_patients_disjoint(leaked, "split", source="sheet.tsv")
    msg = str(info.value)
    assert msg.startswith("sheet.tsv: ")
    assert "a" in msg.split(":", 1)[1]
    assert "patient(s) a fall in more than one split" in msg


def test_assert_patients_disjoint_on_folds_with_numbers() -> None:
    t = pd.DataFrame({"patient_id": [1, 1, 2], "fold": np.array([0, 1, 1])})
    with pytest.raises(SplitError, match="more than one fold"):
        assert_patients_disjoint(t, "fold")


def test_make_folds_refuses_a_split_that_leaks_into_test() -> None:
    samples, positive = sheet(8, 6)
    split = split_patients(samples, positive, test_fraction=0.25, seed=0)
    leaked = split.copy()
    test_patient = leaked.loc[leaked.split == "test", "patient_id"].iloc[0]
    first = leaked.index[leaked.patient_id == test_patient][0]
    leaked.loc[first, "split"] = "train"  # one slide of a test patient now in training
    with pytest.raises(SplitError, match=f"split.tsv: patient.s. {test_patient} fall in more") as e:
        make_folds(leaked, positive, k=2, seed=0, source="results/splits/split.tsv")
    assert "\n" not in str(e.value)
    folds = make_folds(split, positive, k=2, seed=0)  # the whole split table is accepted
    assert set(folds.slide_id) == set(split.slide_id[split.split == "train"])


def test_refusals_name_the_source_in_one_line() -> None:
    samples, positive = sheet(6, 2)
    with pytest.raises(SplitError) as e:
        make_folds(samples, positive, k=3, seed=0, source="config/samples.tsv")
    assert str(e.value) == (
        "config/samples.tsv: folds=3 exceeds the 2 training patient(s) with a lesion; "
        "lower `folds` or add lesion patients"
    )
    with pytest.raises(SplitError, match=r"^s\.tsv: 1 patient\(s\) cannot be split"):
        split_patients(sheet(1, 1)[0], set(), test_fraction=0.2, seed=0, source="s.tsv")


def test_split_without_test_patients_puts_all_in_training() -> None:
    samples = pd.DataFrame({"slide_id": ["a", "b", "c"], "patient_id": ["p", "q", "q"]})
    out = split_patients(samples, {"a"}, test_fraction=0.0, seed=0)
    assert (out.split == "train").all()
    with pytest.raises(SplitError, match=r"\[0, 1\)"):
        split_patients(samples, {"a"}, test_fraction=1.0, seed=0)


def test_training_split_keeps_only_slides_training_in_every_split() -> None:
    box = pd.DataFrame(
        {"slide_id": ["a", "b", "c", "d"], "patient_id": ["P1", "P2", "P3", "P4"],
         "split": ["train", "train", "test", "train"]}
    )  # fmt: skip
    mil = pd.DataFrame(
        {"slide_id": ["a", "b", "c", "d"], "patient_id": ["P1", "P2", "P3", "P4"],
         "split": ["train", "test", "train", "excluded"], "fold": [0, -1, 1, -1]}
    )  # fmt: skip
    both = training_split([box, mil]).set_index("slide_id")
    assert both.split.to_dict() == {"a": "train", "b": "test", "c": "test", "d": "test"}
    assert both.patient_id.to_dict() == {"a": "P1", "b": "P2", "c": "P3", "d": "P4"}
    one = training_split([mil[mil.slide_id != "d"]]).set_index("slide_id")
    assert one.split.to_dict() == {"a": "train", "b": "test", "c": "train"}
    # a slide only one split knows is not training in both
    assert training_split([box, mil.iloc[:2]]).set_index("slide_id").split["d"] == "test"
    with pytest.raises(SplitError):
        assert_training_only(pd.Series(["a", "b"]), training_split([box, mil]), "t", "ssl")
