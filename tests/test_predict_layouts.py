"""`python -m retina.predict` on a dataset folder of each public layout (tests/helpers/layouts.py,
real file types) with a real, untrained model: the rows say the layout they were read from,
ungradable images are left out, and the metrics come with intervals, per patient where the
layout knows its patients.

Run: .venv/bin/pytest tests/test_predict_layouts.py
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from retina.agreement import RESAMPLES, intervals
from retina.cli import run_main
from retina.model_file import model_record
from retina.models import build_model
from retina.predict import main
from tests.helpers import layouts

ARGS = ["--batch-size", "8", "--workers", "1", "--device", "cpu", "--tta", "1"]
INTERVAL = r"-?(\d\.\d{3}|nan) \[-?(\d\.\d{3}|nan), -?(\d\.\d{3}|nan)\]"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False, num_classes=5).eval()
    folder = tmp_path_factory.mktemp("model") / "best"
    folder.mkdir()
    record = model_record(model, arch="resnet18", image_size=32, preprocessing="none", info={})
    torch.save(record, folder / "model.pt")
    return folder


def predict(model: Path, folder: Path, out: Path, capsys) -> tuple[pd.DataFrame, str]:
    assert run_main(main, ["--model", str(model), str(folder), "--out", str(out), *ARGS]) == 0
    captured = capsys.readouterr()
    return pd.read_csv(out), captured.out + captured.err


@pytest.mark.parametrize(
    ("layout", "write", "images", "known"),
    [
        ("aptos", lambda r: layouts.aptos(r, [0, 1, 2, 3, 4, 2]), 6, False),
        ("messidor2", lambda r: layouts.messidor2(r, [0, 1, None, 3, 4, 2, 1, 0]), 7, True),
        ("idrid", lambda r: layouts.idrid(r, [0, 1, 2, 3], [4, 2]), 6, False),
        ("ddr", lambda r: layouts.ddr(r, {"train": [0, 5, 2], "valid": [3], "test": [4, 5]}), 4, False),
    ],
)  # fmt: skip
def test_each_layout_is_graded_with_intervals(model_folder, tmp_path, capsys, layout, write, images, known):  # fmt: skip
    frame, text = predict(model_folder, write(tmp_path / "data"), tmp_path / "p.csv", capsys)
    assert len(frame) == images and (frame["layout"] == layout).all()  # ungradable: no row
    assert list(frame.columns[:3]) == ["image", "layout", "label"] and frame["grade"].notna().all()
    accuracy = (frame["label"] == frame["grade"]).mean()
    line = next(x for x in text.splitlines() if x.startswith("against the labels"))
    assert line.startswith(f"against the labels ({images} images): accuracy {accuracy:.3f} [")
    for name in ("accuracy", "quadratic kappa", "balanced accuracy", "referable sensitivity"):
        assert re.search(f"{name} {INTERVAL}", line), name
    unit = "patients" if known else "images (no patient ids"
    assert f"percentile bootstrap over {unit}" in text and "confusion matrix" in text
    if known:  # Messidor-2's exams: the worse eye's grade per patient, with intervals
        assert re.search(f"per patient \\(4: the worse eye's grade\\): referable sensitivity {INTERVAL}", text)  # fmt: skip
        assert "1 image(s) the dataset grades ungradable are left out" in text
    else:
        assert "the layout publishes no patient ids, so each image is its own patient" in text


def test_intervals_resample_patients_and_hold_the_estimate():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 5, 200)
    predicted = np.where(rng.random(200) < 0.7, true, rng.integers(0, 5, 200))
    by_image = intervals(true, predicted, np.arange(200))
    estimate, low, high = by_image["accuracy"]
    assert estimate == pytest.approx((true == predicted).mean()) and low < estimate < high
    # Pairs of images that always agree with each other: resampling patients (the pairs) widens
    # the interval, as it must when two eyes of one patient are not independent.
    paired_true, paired_pred = np.repeat(true[:100], 2), np.repeat(predicted[:100], 2)
    by_pair = intervals(paired_true, paired_pred, np.repeat(np.arange(100), 2))
    naive = intervals(paired_true, paired_pred, np.arange(200))
    width = lambda v: v["kappa"][2] - v["kappa"][1]  # noqa: E731
    assert width(by_pair) > width(naive) and RESAMPLES >= 1000


def test_cpu_lanes_grade_as_one_lane_and_keep_each_files_reason(model_folder, tmp_path):
    """The CPU path in lanes (threads that each decode and run the model on a share of the
    batch) gives every file the probabilities and grade the one-lane path gives, and a broken
    file its reason, in input order; torch's thread count is restored afterwards."""
    from retina.grading import grade_files
    from retina.model_file import load_model

    folder = layouts.aptos(tmp_path / "data", [0, 1, 2, 3, 4, 2, 1])
    broken = folder / "train_images" / "broken.png"
    broken.write_bytes(b"not a picture")
    paths = sorted((folder / "train_images").iterdir())
    loaded = load_model(model_folder, torch.device("cpu"))
    threads = torch.get_num_threads()
    one = grade_files(loaded, paths, batch_size=3, workers=1, views=1)
    lanes = grade_files(loaded, paths, batch_size=3, workers=2, views=1)
    assert torch.get_num_threads() == threads
    assert lanes.errors == one.errors and lanes.errors[paths.index(broken)].startswith("not an image")  # fmt: skip
    assert np.array_equal(lanes.grades, one.grades)
    assert np.allclose(lanes.probs, one.probs, atol=1e-5, equal_nan=True)
