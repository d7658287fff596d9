"""Patient-level train/test splits and folds, with leakage refused in code."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from histodetect.errors import SplitError, name_some


def assert_patients_disjoint(
    table: pd.DataFrame, by: str, source: str = "split", unit: str = "patient_id"
) -> None:
    """Raise :class:`SplitError` if any ``unit`` (patient, bag) has slides in two values of
    column ``by``."""
    per_unit = table.groupby(unit)[by].nunique()
    leaked = per_unit[per_unit > 1]
    if len(leaked):
        what = {"patient_id": "patient", "bag_id": "bag"}.get(unit, unit)
        raise SplitError(source, f"{what}(s) {name_some(leaked.index)} fall in more than one {by}")


def assert_training_only(
    slide_ids: pd.Series, split: pd.DataFrame, source: str, purpose: str
) -> None:
    """Raise :class:`SplitError` unless every slide of ``slide_ids`` is a training slide.

    ``split`` is the table of ``split_patients`` (``slide_id``, ``patient_id``, ``split``); a
    slide of a test patient, or one the split does not know, is refused: nothing learnt for
    ``purpose`` (self-supervised pretraining, tuning) may have seen a test patient.
    """
    known = split.assign(slide_id=split["slide_id"].astype(str)).set_index("slide_id")
    ids = pd.Series(pd.unique(slide_ids.astype(str)))
    status = known["split"].reindex(ids).fillna("unknown")
    bad = ids[(status != "train").to_numpy()]
    if len(bad):
        patients = known["patient_id"].reindex(bad).fillna("?").astype(str)
        named = name_some(f"{s} ({p})" for s, p in zip(bad, patients, strict=True))
        raise SplitError(
            source,
            f"{purpose} may use training patients only, but {len(bad)} slide(s) are of test or "
            f"unknown patients: {named}",
        )


def training_split(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """One split table (``slide_id``, ``patient_id``, ``split``) of several splits of a cohort:
    a slide is ``train`` only when every table holds it as a training slide, else ``test``.

    The box stage's split and the slide-label folds each hold their own patients out; what is
    learnt for both (the cohort's own encoder) may see neither's held-out patients.
    """
    if not tables:
        raise ValueError("training_split needs at least one split table")
    parts = [
        t[["slide_id", "patient_id", "split"]].astype(str).drop_duplicates("slide_id")
        for t in tables
    ]
    stacked = pd.concat(parts, ignore_index=True)
    per_slide = stacked.groupby("slide_id", sort=False).agg(
        patient_id=("patient_id", "first"),
        n_train=("split", lambda s: int((s == "train").sum())),
    )
    split = np.where(per_slide.n_train == len(tables), "train", "test")
    return per_slide.assign(split=split).drop(columns="n_train").reset_index()


def _patient_strata(samples: pd.DataFrame, positive: set[str], extra: str | None) -> pd.Series:
    """Stratum of each patient: any lesion slide, and the ``extra`` value of its first slide."""
    lesion = samples.slide_id.isin(positive).groupby(samples.patient_id, sort=True).any()
    y = lesion.astype(int).astype(str)
    if extra and extra in samples.columns:
        y = y + "|" + samples.groupby("patient_id", sort=True)[extra].first().astype(str)
    return y


def _quotas(sizes: pd.Series, n_test: int, rng: np.random.Generator) -> pd.Series:
    """Test patients per stratum: proportional shares rounded by largest remainder.

    The quotas add up to ``n_test`` and each is within one of its exact share; ties between
    equal remainders are broken at random (seeded).
    """
    exact = sizes * n_test / sizes.sum()
    quota = np.floor(exact).astype(int)
    left = n_test - int(quota.sum())
    if left:
        shuffled = exact.index[rng.permutation(len(exact))]
        remainder = (exact - quota)[shuffled]
        quota[remainder.sort_values(ascending=False, kind="stable").index[:left]] += 1
    return quota


def split_patients(
    samples: pd.DataFrame,
    positive_slides: set[str],
    *,
    test_fraction: float,
    seed: int,
    stratify_by: str | None = "centre",
    source: str = "sample sheet",
    strata: pd.Series | None = None,
) -> pd.DataFrame:
    """Split slides into ``train``/``test`` by patient, stratified by lesion presence.

    ``round(test_fraction * n_patients)`` patients (at least one, and at least one left for
    training) go to test, so the test share is the configured one within one patient. Each
    stratum of patients (lesion or not, and the ``stratify_by`` column when the sheet has
    it) gives its proportional share, rounded by largest remainder; the patients of a
    stratum are drawn at random with ``seed``.

    ``test_fraction == 0`` holds no patient out: every slide is ``train`` and goes to the
    folds, for an evaluation out of fold only (leave patients out, e.g. ``bench/mitos2012.py``).

    ``strata`` (indexed by patient) replaces lesion presence and ``stratify_by``: the
    slide-label models stratify by the bag label.

    Returns ``samples`` with a ``split`` column. Every patient lands wholly on one side.
    ``source`` names the sample sheet in error messages.
    """
    if test_fraction == 0:
        return samples.assign(split="train")
    if not 0 < test_fraction < 1:
        raise SplitError("config", f"test_fraction must be in [0, 1), got {test_fraction}")
    n_patients = samples.patient_id.nunique()
    if n_patients < 2:
        raise SplitError(
            source,
            f"{n_patients} patient(s) cannot be split into train and test (need 2 or more)",
        )
    n_test = min(max(1, math.floor(test_fraction * n_patients + 0.5)), n_patients - 1)
    rng = np.random.default_rng(seed)
    if strata is None:
        strata = _patient_strata(samples, positive_slides, stratify_by)
    quota = _quotas(strata.value_counts().sort_index(), n_test, rng)
    test_patients: list[str] = []
    for stratum, n in quota.items():
        members = strata.index[strata == stratum].to_numpy()
        test_patients += list(rng.permutation(members)[:n])
    out = samples.copy()
    out["split"] = np.where(samples.patient_id.isin(test_patients), "test", "train")
    assert_patients_disjoint(out, "split", source)
    return out


def make_folds(
    train: pd.DataFrame,
    positive_slides: set[str],
    *,
    k: int,
    seed: int,
    source: str = "sample sheet",
) -> pd.DataFrame:
    """Assign training slides to ``k`` folds by patient (StratifiedGroupKFold).

    ``train`` may be the whole split table: its test patients are set aside after checking
    that none of them also has a training slide. ``source`` names it in error messages.

    Raises:
        SplitError: if a patient is in both train and test, if ``k`` exceeds the number of
            patients with a lesion (some fold would have no positive validation patient) or
            the folds would share a patient.
    """
    if "split" in train.columns:
        assert_patients_disjoint(train[train.split != "excluded"], "split", source)
        train = train[train.split == "train"].reset_index(drop=True)
    pos_patients = train.loc[train.slide_id.isin(positive_slides), "patient_id"].nunique()
    if k < 2:
        raise SplitError("config", f"folds must be >= 2, got {k}")
    if k > pos_patients:
        raise SplitError(
            source,
            f"folds={k} exceeds the {pos_patients} training patient(s) with a lesion; "
            "lower `folds` or add lesion patients",
        )
    y = train.slide_id.isin(positive_slides).astype(int)
    from sklearn.model_selection import StratifiedGroupKFold  # 1.8 s: only where folds are drawn

    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = train.copy()
    out["fold"] = -1
    for fold, (_, idx) in enumerate(cv.split(train, y, groups=train.patient_id)):
        out.iloc[idx, out.columns.get_loc("fold")] = fold
    assert_patients_disjoint(out, "fold", source)
    for fold in range(k):
        if not out.loc[out.fold == fold, "slide_id"].isin(positive_slides).any():
            raise SplitError(source, f"fold {fold} has no patient with a lesion; use fewer folds")
    return out
