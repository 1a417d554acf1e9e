"""`python -m study.analyze` writes summary.json (the keys docs/results.md documents) and the
comparison section, for a study with a confirm stage and for older studies without one."""

from __future__ import annotations

import html
import json
import shutil

import numpy as np
import pandas as pd

from retina.thresholds import DEFAULT_THRESHOLDS, grades_from_scores
from study.analyze.seeds_needed import advice_text
from study.conclude.card_screening import screening_lines, screening_record
from study.conclude.onnx_file import onnx_metadata
from study.record.predictions import SplitPredictions, predictions_frame, write_predictions
from tests.helpers.analyze_fixtures import make_results
from tests.helpers.cli import assert_fails
from tests.helpers.confirm_fixtures import add_confirm

TOP_KEYS = {
    "schema_version", "study", "metric", "primary_metric", "confirm", "bootstrap", "cells",
    "pairs", "tuning", "optimism", "seed_variance", "referable", "calibration", "patients",
    "external",
}  # fmt: skip
CELL_KEYS = {"cell", "values", "trial_ids", "seeds", "n_runs", "metrics"}
CELL_METRIC_KEYS = {"mean", "sd", "ci_low", "ci_high", "seed_sd", "runs"}
PAIR_KEYS = {"a", "b", "dimension", "a_value", "b_value", "seed_variation_included", "metrics",
             "test_noise", "seeds_needed"}  # fmt: skip
PAIR_METRIC_KEYS = {
    "difference", "ci_low", "ci_high", "different", "p_value", "p_value_adjusted",
    "different_adjusted", "family", "p_a_beats_b", "p_ci_low", "p_ci_high", "p_verdict",
    "runs_share_a_beats_b", "seed_sd", "seed_dof",
}  # fmt: skip
SEED_VARIANCE_KEYS = {"pooled_sd", "dof", "unshared_test_noise_sd", "runs_sd"}
TRUTH = {  # test accuracy of each cell's runs: pretrained far better, the archs alike
    ("resnet18", True): 0.85, ("resnet18", False): 0.5,
    ("resnet50", True): 0.85, ("resnet50", False): 0.5,
}  # fmt: skip


def _strict(path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}: not strict JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_a_study_with_a_confirm_stage(tmp_path, analyze):
    folder = add_confirm(make_results(tmp_path), TRUTH, seeds=3, n_patients=80)
    result = analyze(folder, "--resamples", "2000")
    assert result.returncode == 0, result.stderr
    summary = _strict(folder / "summary.json")
    assert set(summary) == TOP_KEYS and summary["schema_version"] == 4
    assert summary["confirm"] == {
        "compare": ["arch", "pretrained"], "seeds": 3, "margin": 0.05, "test": "test",
        "batches": [],
        "status": "ok", "note": "",
    }  # fmt: skip
    boot = summary["bootstrap"]
    assert (boot["unit"], boot["resamples"], boot["confidence"]) == ("patient", 2000, 0.95)
    assert (boot["test_images"], boot["test_patients"]) == (160, 80)
    cells = summary["cells"]
    assert [c["cell"] for c in cells] == [
        "resnet18 · pretrained", "resnet18 · scratch", "resnet50 · pretrained", "resnet50 · scratch"
    ]  # fmt: skip
    for cell in cells:
        assert set(cell) == CELL_KEYS and cell["n_runs"] == 3 and cell["seeds"] == [0, 1, 2]
        for m in ("kappa", "acc", "balanced_acc"):
            stats = cell["metrics"][m]
            assert set(stats) == CELL_METRIC_KEYS and len(stats["runs"]) == 3
            assert stats["ci_low"] <= stats["mean"] <= stats["ci_high"]
    # 4 cells in a 2 x 2: two pretrained-vs-scratch pairs and two arch pairs, no diagonal ones
    pairs = {(p["a"], p["b"]): p for p in summary["pairs"]}
    assert len(pairs) == 4 and ("resnet18 · pretrained", "resnet50 · scratch") not in pairs
    for p in pairs.values():
        assert set(p) - {"sentence"} == PAIR_KEYS
        assert set(p["metrics"]["kappa"]) == PAIR_METRIC_KEYS
        # an undecided pair says how many seeds would narrow it, in summary and sentence
        undecided = not p["metrics"]["kappa"]["different_adjusted"]
        assert (p["seeds_needed"] is not None) == undecided
        if undecided:
            assert p["sentence"].endswith("; " + advice_text(p["seeds_needed"], "kappa"))
    init = pairs["resnet18 · pretrained", "resnet18 · scratch"]
    assert init["dimension"] == "pretrained" and init["metrics"]["acc"]["different"]
    assert init["sentence"].startswith("pretrained beats scratch for resnet18 by ")
    assert summary["tuning"]["trials"] == 5 and len(summary["tuning"]["study"]["n"]) == 5
    assert summary["optimism"]["trial_id"] == "t01"  # the search's best; confirm runs excluded
    assert summary["optimism"]["confirm"]["cell"] == "resnet50 · pretrained"
    for m in ("kappa", "acc", "balanced_acc"):  # this study's own seed spread, 4 x (3 - 1) dof
        assert set(summary["seed_variance"][m]) == SEED_VARIANCE_KEYS
        assert summary["seed_variance"][m]["dof"] == 8
    assert boot["adjustment"] == "holm"
    for p in pairs.values():  # the family: the study's 4 pairs; adjusted p-values never smaller
        for m in p["metrics"].values():
            assert m["family"] == 4 and m["p_value_adjusted"] >= m["p_value"]
            assert m["p_ci_low"] <= m["p_a_beats_b"] <= m["p_ci_high"]

    text = (folder / "report.html").read_text(encoding="utf-8")
    section = text[text.index('<section id="comparison">') :]
    assert "How to read this" in section and html.escape(init["sentence"]) in section
    assert "resnet50 · scratch" in section and "0.676, 0.851" not in section  # no fixed numbers
    assert "Holm" in section and "in this study's confirm runs" in section
    assert "Tuning curve" in section and "Optimism" in section

    # referable DR and calibration of the best search trial (the fixture's confirm runs have
    # test predictions only: they are named as left out)
    referable, calibration = summary["referable"], summary["calibration"]
    assert referable["operating_point"] == {
        "target": "sensitivity",
        "value": 0.9,
        "chosen_on": "val",
    }
    best = referable["best"]
    assert best["trial_id"] == "t01" and best["val"]["sensitivity"] >= 0.9
    assert best["auroc_ci"][0] <= best["auroc"] <= best["auroc_ci"][1]
    assert best["test_patient"]["n"] == 80 and best["test_image"]["n"] == 160
    assert referable["confirm"] == [] and "c_resnet18_p_0 (no val predictions)" in referable["note"]
    assert calibration["best"]["trial_id"] == "t01" and calibration["bins"] == 10
    assert calibration["best"]["temperature"] > 0 and len(calibration["best"]["bins"]) == 10
    section = text[text.index('<section id="referable">') :]
    assert "AUROC" in section and "test, per patient" in section and "Reliability" in section

    # both eyes: the best trial per patient (intervals) and each confirm run (point values)
    patients = summary["patients"]
    view = patients["best"]
    assert view["trial_id"] == "t01" and patients["bootstrap"]["resamples"] == 2000
    assert (view["patients"], view["both_eyes"], view["one_eye"]) == (80, 80, 0)
    assert view["per_image"]["n"] == 160 and view["per_patient"]["n"] == 80
    lo, hi = view["per_patient"]["kappa_both_eyes_ci"]
    assert lo <= view["per_patient"]["kappa_both_eyes"] <= hi
    assert len(patients["confirm"]) == 12 and patients["confirm"][0]["per_patient"][
        "sensitivity_ci"
    ] == [None, None]
    assert "Both eyes: per patient" in section and "80 test patients, 80 with both eyes" in section


def test_the_same_seed_gives_the_same_summary(tmp_path, analyze):
    folder = add_confirm(make_results(tmp_path), TRUTH, seeds=2, n_patients=30)
    assert analyze(folder, "--resamples", "500").returncode == 0
    first = (folder / "summary.json").read_text()
    assert analyze(folder, "--resamples", "500").returncode == 0
    assert (folder / "summary.json").read_text() == first


def test_a_study_without_confirm_says_what_to_run(tmp_path, analyze):
    folder = make_results(tmp_path)
    assert analyze(folder).returncode == 0
    summary = _strict(folder / "summary.json")
    assert summary["confirm"]["status"] == "no_confirm"
    assert summary["cells"] == [] and summary["pairs"] == [] and summary["seed_variance"] == {}
    assert summary["tuning"]["study"] is not None  # search trials are enough for the curve
    assert summary["optimism"]["gap"] is not None
    text = (folder / "report.html").read_text(encoding="utf-8")
    assert "confirm: {compare: [arch, pretrained], seeds: 3}" in text


def test_confirm_runs_without_predictions(tmp_path, analyze):
    folder = add_confirm(make_results(tmp_path), TRUTH, seeds=2, n_patients=20)
    shutil.rmtree(folder / "predictions")
    assert analyze(folder).returncode == 0
    summary = _strict(folder / "summary.json")
    assert summary["confirm"]["status"] == "no_predictions" and summary["cells"] == []


def test_bad_resamples(tmp_path, analyze):
    result = analyze(make_results(tmp_path), "--resamples", "10")
    assert result.returncode == 2 and "--resamples must be a whole number >= 100" in result.stderr


def test_unreadable_predictions(tmp_path, analyze):
    folder = add_confirm(make_results(tmp_path), TRUTH, seeds=2, n_patients=20)
    (folder / "predictions" / "broken.parquet").write_text("not parquet")
    assert_fails(analyze(folder), "predictions", "not a readable Parquet file")


def test_a_regress_winner_gets_a_platt_calibrated_p_referable(tmp_path, analyze):
    """The best search trial (t01) is a regress head: its predictions/ file is rewritten as the
    record writes a regress head's (scores and grades, no probabilities)."""
    folder = add_confirm(make_results(tmp_path), TRUTH, seeds=2, n_patients=80)
    for path in (folder / "predictions").glob("*.parquet"):  # the contract's score column,
        rows = pd.read_parquet(path)  # which the hand-made classify files lack: expected grade
        rows["score"] = (rows[[f"p{g}" for g in range(5)]] * np.arange(5)).sum(axis=1)
        rows.astype({"score": "float32"}).to_parquet(path, index=False)
    old = pd.read_parquet(folder / "predictions" / "t01.parquet")
    rng = np.random.default_rng(5)
    parts, image_ids, patient_ids, labels = [], [], [], []
    for split in ("val", "test"):
        rows = old[old["split"] == split]
        index = np.arange(len(rows)) + len(labels)
        true = rows["true"].to_numpy()
        score = (true + rng.normal(0, 0.9, len(rows))).astype(np.float32)  # an over-spread score
        parts.append(SplitPredictions(split, index, None, score, grades_from_scores(score, DEFAULT_THRESHOLDS)))  # fmt: skip
        image_ids += list(rows["image"])
        patient_ids += list(rows["patient"])
        labels += list(true)
    (folder / "predictions" / "t01.parquet").unlink()
    frame = predictions_frame("t01", parts, np.array(labels), image_ids, patient_ids)
    assert write_predictions(folder, "t01", frame)

    assert analyze(folder, "--resamples", "500").returncode == 0
    summary = _strict(folder / "summary.json")
    calibration, referable = summary["calibration"], summary["referable"]
    best = calibration["best"]
    assert best["trial_id"] == "t01" and best["head"] == "regress"
    assert best["platt"]["slope"] > 0
    ref = best["referable"]  # ECE of P(referable) before and after, patient-bootstrap intervals
    for key in ("test_ece", "test_ece_scaled"):
        lo, hi = ref[f"{key}_ci"]
        assert 0 <= lo <= ref[key] <= hi <= 1
    assert ref["test_ece_scaled"] < ref["test_ece"]  # the fit on val helps on test
    assert sum(b["n"] for b in ref["bins_scaled"]) == 160
    assert "regress" in calibration["note"] and "no probabilities" not in calibration["note"]
    assert referable["score"].startswith("the regress head's score")
    # classify confirm runs keep their top-label calibration beside P(referable)'s
    assert "no probabilities" not in json.dumps(summary)
    text = (folder / "report.html").read_text(encoding="utf-8")
    section = text[text.index('<section id="referable">') :]
    assert "Reliability of P(referable) on test, best trial" in section
    assert "Platt" in section
    # what export stores in model.pt and the ONNX metadata, and what the card says
    stored = screening_record(folder, "t01")
    assert stored["referable_platt"] == [best["platt"]["slope"], best["platt"]["intercept"]]
    assert "temperature" not in stored
    meta = onnx_metadata("regress", list(DEFAULT_THRESHOLDS), 1, stored)
    assert json.loads(meta["referable_platt"]) == stored["referable_platt"]
    card = "\n".join(screening_lines(summary, "t01"))
    assert "Platt scaling" in card and f"{ref['test_ece_scaled']:.3f}" in card
