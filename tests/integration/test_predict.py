"""New slides through `snakemake predict`, and the out-of-fold tuning of the small run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from _workflow import snakemake

from histodetect.slides.synthetic import make_cohort

pytestmark = pytest.mark.integration


def test_oof_heatmaps_come_from_the_fold_blind_to_each_patient(small_run: Path) -> None:
    res = small_run / "results"
    folds = pd.read_csv(res / "splits" / "folds.tsv", sep="\t", dtype=str)
    split = pd.read_csv(res / "splits" / "split.tsv", sep="\t", dtype=str)
    record = json.loads((res / "tuning" / "boxes.json").read_text())
    train = sorted(split.loc[split.split == "train", "slide_id"])
    assert sorted(record["slides"]) == train  # every training slide, no test slide
    assert {p.stem for p in (res / "oof" / "heatmaps").glob("*.npz")} == set(train)
    trained = {}
    for model in (res / "models").glob("fold_*/model.pt"):
        meta = torch.load(model, map_location="cpu", weights_only=True)["meta"]
        trained[int(meta["fold"])] = set(meta["train_patients"])
    for row in folds.itertuples():
        log = (small_run / "logs" / "infer_oof" / f"{row.slide_id}.log").read_text()
        assert f"fold_{row.fold}/model.pt" in log
        assert row.patient_id not in trained[int(row.fold)]
    search = pd.read_csv(res / "tuning" / "boxes_search.tsv", sep="\t")
    assert record["oof_mean_f2"] == pytest.approx(search.oof_mean_f2.max(), abs=1e-4)
    metrics = json.loads((res / "metrics" / "detection.json").read_text())
    assert metrics["oof_mean_f2"] == pytest.approx(record["oof_mean_f2"])
    slides = pd.read_csv(res / "metrics" / "slides.tsv", sep="\t", dtype={"slide_id": str})
    assert sorted(slides.slide_id) == sorted(split.loc[split.split == "test", "slide_id"])


def test_predict_on_a_second_cohort(run_copy: Path) -> None:
    new = run_copy / "new"
    samples, _ = make_cohort(
        new, n_slides=3, n_patients=3, width=3072, height=3072, negative_slides=1,
        lesions_per_slide=(1, 2), lesion_size_um=(400, 600), seed=77,
    )  # fmt: skip
    sheet = samples[["slide_id", "path"]].assign(slide_id=lambda d: "N" + d.slide_id)
    sheet["n_lesions"] = [3, 1, 2]
    broken = new / "broken.svs"
    broken.write_bytes(b"not a slide")
    sheet.loc[len(sheet)] = ["Nbad", str(broken), 1]
    sheet.to_csv(run_copy / "new_slides.tsv", sep="\t", index=False)
    proc = snakemake(run_copy, "predict", "--config", "predict={samples: new_slides.tsv}")
    res = run_copy / "results" / "predict"
    good = [s for s in sheet.slide_id if s != "Nbad"]
    record = json.loads((run_copy / "results" / "models" / "threshold.json").read_text())
    threshold = record["decision"]["threshold"]
    for slide in good:
        for path in (f"heatmaps/{slide}.npz", f"scores/{slide}.parquet", f"boxes/{slide}.csv",
                     f"boxes/{slide}.geojson", f"overlays/{slide}.png"):  # fmt: skip
            assert (res / path).stat().st_size > 0, path
        scores = pd.read_parquet(res / "scores" / f"{slide}.parquet")  # the model's decision
        assert (scores.call_at_oof_threshold == (scores.prob >= threshold)).all()
    slides = pd.read_csv(
        res / "slides.tsv", sep="\t", dtype={"slide_id": str}, keep_default_na=False
    )
    assert slides.slide_id.tolist() == sheet.slide_id.tolist()
    bad = slides.set_index("slide_id").loc["Nbad"]
    assert bad.status == "failed" and "broken.svs" in proc.stdout + proc.stderr + bad.error
    assert set(slides.set_index("slide_id").loc[good, "lesion"]) <= {"yes", "no"}
    sub = pd.read_csv(res / "submission.csv")
    assert list(sub.columns) == ["filename", "x1", "x2", "y1", "y2"]
    names = dict(zip(sheet.slide_id, (Path(p).name for p in sheet.path), strict=True))
    for slide, n in zip(sheet.slide_id, sheet.n_lesions, strict=True):
        rows = sub[sub.filename == names[slide]]
        assert len(rows) == n, slide  # exactly n_lesions rows, padded
        real = rows[(rows[["x1", "x2", "y1", "y2"]] != 0).any(axis=1)]
        padded = rows.drop(real.index)
        assert (padded[["x1", "x2", "y1", "y2"]] == 0).all().all()
        if slide == "Nbad":
            assert real.empty
        assert ((real.x1 >= 0) & (real.x1 < real.x2) & (real.x2 <= 3072)).all()
        assert ((real.y1 >= 0) & (real.y1 < real.y2) & (real.y2 <= 3072)).all()
        found = pd.read_csv(res / "boxes" / f"{slide}.csv") if slide != "Nbad" else []
        assert len(real) == min(n, len(found))


def test_predict_refuses_models_of_another_resolution(run_copy: Path) -> None:
    new = run_copy / "new"
    samples, _ = make_cohort(new, n_slides=1, n_patients=1, width=2048, height=2048,
                             negative_slides=0, lesions_per_slide=(1, 1),
                             lesion_size_um=(300, 300), seed=5)  # fmt: skip
    samples[["slide_id", "path"]].to_csv(run_copy / "one.tsv", sep="\t", index=False)
    for model in (run_copy / "results" / "models").glob("fold_*/model.pt"):  # another run's
        dest = run_copy / "old_models" / model.parent.name / "model.pt"
        dest.parent.mkdir(parents=True)
        shutil.copy(model, dest)
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    config["tiling"] |= {"tile_um": 64.0, "target_mpp": 1.0}
    config["predict"] = {"samples": "one.tsv", "models": "old_models"}
    (run_copy / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(run_copy, "predict", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        "model.pt: trained on 128 um tiles at 2 um/px but tiling makes 64 um tiles at 1 um/px"
        in out
    )
