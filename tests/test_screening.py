"""What the exported model carries from its study's screening analysis: model.pt's temperature
and referable threshold (from summary.json, for the exported trial only), and `retina.predict`
applying them exactly as the analysis did (the same temperature scaling, the same p2+p3+p4)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from retina.grading import Graded
from retina.model_file import MODEL_FILE, load_model, model_record
from retina.models import build_model
from retina.predict import main
from retina.screening import referable_column, referable_probability_column, temperature_scaled
from study.analyze.calibration import apply_temperature
from study.conclude.card_screening import screening_record

PROBS = [f"p{g}" for g in range(5)]


def test_predicts_scaling_is_the_analysis_scaling():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5) * 0.3, size=50).astype(np.float32)
    probs[3] = np.nan  # a failed image stays failed
    for t in (0.5, 1.7):
        got = temperature_scaled(probs, t)
        assert got.dtype == np.float32 and np.isnan(got[3]).all()
        ok = ~np.isnan(probs[:, 0])
        assert np.allclose(got[ok], apply_temperature(probs[ok], t), atol=1e-6)
    assert temperature_scaled(probs, 1.0) is probs


def test_referable_at_the_threshold_else_at_the_grade():
    probs = np.array([[0.5, 0.2, 0.1, 0.1, 0.1], [0.1, 0.5, 0.4, 0, 0], [np.nan] * 5], np.float32)
    graded = Graded(probs, [None, None, "unreadable"])
    assert referable_column(graded, 0.3).tolist() == [True, True, pd.NA]
    assert referable_column(graded, 0.35).tolist() == [False, True, pd.NA]
    assert referable_column(graded, None).tolist() == [False, False, pd.NA]  # argmax 0 and 1


def test_a_regress_models_referable_is_on_its_score():
    # No probabilities: the threshold is on the score, and without one the grade decides.
    probs = np.full((3, 5), np.nan, np.float32)
    scores = np.array([0.4, 2.3, np.nan], np.float32)
    graded = Graded(probs, [None, None, "unreadable"], scores, np.array([0, 2, -1]))
    assert referable_column(graded, 1.2).tolist() == [False, True, pd.NA]
    assert referable_column(graded, 0.3).tolist() == [True, True, pd.NA]
    assert referable_column(graded, None).tolist() == [False, True, pd.NA]


def test_p_referable_of_either_head():
    probs = np.array([[0.5, 0.2, 0.1, 0.1, 0.1], [np.nan] * 5], np.float32)
    classify = referable_probability_column(Graded(probs, [None, "unreadable"]), None)
    assert classify[0] == pytest.approx(0.3) and np.isnan(classify[1])
    scores = np.array([0.4, 2.3, np.nan], np.float32)
    regress = Graded(np.full((3, 5), np.nan, np.float32), [None, None, "unreadable"], scores,
                     np.array([0, 2, -1]))  # fmt: skip
    p = referable_probability_column(regress, (2.0, -3.0))  # the stored Platt fit
    assert p[:2] == pytest.approx(1 / (1 + np.exp(-(2.0 * scores[:2] - 3.0)))) and np.isnan(p[2])
    assert np.isnan(referable_probability_column(regress, None)).all()  # no fit, no probability


def test_the_record_takes_the_summarys_values_for_its_own_trial_only(tmp_path):
    assert screening_record(tmp_path, "t01") == {}  # no summary.json
    summary = {"referable": {"best": {"trial_id": "t01", "threshold": 0.25}},
               "calibration": {"best": {"trial_id": "t01", "temperature": 1.5}}}  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert screening_record(tmp_path, "t01") == {"temperature": 1.5, "referable_threshold": 0.25}
    assert screening_record(tmp_path, "t07") == {}  # exported with --trial: not its threshold
    summary["calibration"]["best"] = {"trial_id": "t01", "head": "regress",
                                      "platt": {"slope": 1.2, "intercept": -2.5}}  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert screening_record(tmp_path, "t01") == {"referable_platt": [1.2, -2.5],
                                                 "referable_threshold": 0.25}  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(4):
        pixels = rng.integers(0, 255, size=(48, 48, 3), dtype=np.uint8)
        pixels[:, :, 0] = np.clip(pixels[:, :, 0].astype(int) + 60, 0, 255)  # a reddish disc
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def _export(folder, extra: dict) -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    record = model_record(model, arch="resnet18", image_size=32, preprocessing="none", info={})
    folder.mkdir()
    torch.save(record | extra, folder / MODEL_FILE)


def test_predict_outputs_calibrated_probabilities_and_referable_at_the_threshold(photos, tmp_path):
    _export(tmp_path / "plain", {})
    assert main(["--model", str(tmp_path / "plain"), str(photos), "--out",
                 str(tmp_path / "plain.csv"), "--workers", "1"]) == 0  # fmt: skip
    raw = pd.read_csv(tmp_path / "plain.csv")
    raw_probs = raw[PROBS].to_numpy(np.float32)
    threshold = float(np.median(raw_probs[:, 2:].sum(axis=1)))  # some images on each side
    _export(tmp_path / "scaled", {"temperature": 2.5, "referable_threshold": threshold})
    loaded = load_model(tmp_path / "scaled")
    assert (loaded.temperature, loaded.referable_threshold) == (2.5, threshold)
    assert main(["--model", str(tmp_path / "scaled"), str(photos), "--out",
                 str(tmp_path / "scaled.csv"), "--workers", "1"]) == 0  # fmt: skip
    scaled = pd.read_csv(tmp_path / "scaled.csv")
    expected = apply_temperature(raw_probs, 2.5)
    assert np.allclose(scaled[PROBS].to_numpy(), expected, atol=1e-5)
    assert scaled["referable"].tolist() == list(expected[:, 2:].sum(axis=1) >= threshold)
    assert (scaled["grade"] == raw["grade"]).all()  # scaling never changes the argmax
