"""`python -m retina.predict --by-patient` on real image files with a real (untrained) model: the
patient rows are the max of the eyes' rows, one-eyed patients and unpaired names are said, and
the image rows are written whatever pairs. The parity with a study's own test predictions is in
tests/test_predict.py (it needs the conftest's sweep)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from retina.cli import run_main
from retina.model_file import model_record
from retina.models import build_model
from retina.predict import main

ARGS = ["--batch-size", "8", "--workers", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False, num_classes=5).eval()
    folder = tmp_path_factory.mktemp("model") / "best"
    folder.mkdir()
    record = model_record(model, arch="resnet18", image_size=32, preprocessing="none", info={})
    torch.save(record, folder / "model.pt")
    return folder


def copy_images(synthetic_data: Path, folder: Path, names: dict[str, str]) -> Path:
    """`folder` holding the synthetic data's images under new names ({new: source image id})."""
    folder.mkdir()
    for new, source in names.items():
        shutil.copy(synthetic_data / "train" / f"{source}.jpeg", folder / new)
    return folder


def predict(argv: list[str], capsys) -> tuple[int, str, str]:
    code = run_main(main, [*argv, *ARGS])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_patient_rows_are_the_max_of_the_eyes_and_one_eyed_patients_are_said(
    model_folder, synthetic_data, tmp_path, capsys
):
    """A labelled dataset less one eye's label row: that patient has one eye; its row is that
    eye's, it counts for referable and not for the kappa."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    labels = pd.read_csv(data / "trainLabels.csv")
    dropped = labels["image"].iloc[1]  # the second eye of the first patient
    labels[labels["image"] != dropped].to_csv(data / "trainLabels.csv", index=False)
    out = tmp_path / "preds.parquet"
    code, text, _ = predict(["--model", str(model_folder), str(data), "--out", str(out),
                             "--by-patient"], capsys)  # fmt: skip
    assert code == 0
    frame = pd.read_parquet(out)
    assert list(frame.columns[:4]) == ["level", "image", "patient", "eye"]
    images, patients = frame[frame["level"] == "image"], frame[frame["level"] == "patient"]
    assert len(images) == len(labels) - 1 and patients["image"].isna().all()
    assert patients["patient"].is_unique and len(patients) == images["patient"].nunique()
    by_patient = images.groupby("patient")
    rows = patients.set_index("patient")
    assert (rows["grade"] == by_patient["grade"].max()).all()
    assert (rows["label"] == by_patient["label"].max()).all()
    assert (rows["referable"] == by_patient["referable"].any()).all()
    assert (rows["grade"] >= 2).eq(rows["referable"]).all()  # no threshold: grade >= 2
    assert rows[["p0", "p1", "p2", "p3", "p4", "score"]].isna().all().all()
    alone = str(labels["image"].iloc[0]).rsplit("_", 1)[0]
    assert rows.loc[alone, "eye"] == "left" and (rows.drop(index=alone)["eye"] == "both").all()
    n = len(patients)
    assert f"by patient: {n} patients ({n - 1} with both eyes graded, 1 with one eye only)" in text
    assert f"  {alone} (left only)" in text
    assert f"per patient: {n} patients ({n - 1} both eyes, 1 one eye)" in text
    assert "the 1 with one eye only count for referable, not for the kappa" in text


def test_names_that_pair_no_eye_are_listed_and_their_image_rows_kept(
    model_folder, synthetic_data, tmp_path, capsys
):
    folder = copy_images(synthetic_data, tmp_path / "loose", {
        "7_left.jpeg": "1_left", "7_right.JPG": "1_right", "scan.jpeg": "2_right",
        "8_left.jpeg": "3_left",
    })  # fmt: skip
    code, csv, err = predict(["--model", str(model_folder), str(folder), "--by-patient"], capsys)
    assert code == 0
    lines = csv.splitlines()
    assert lines[0].startswith("level,image,patient,eye,grade,")
    assert sum(line.startswith("image,") for line in lines) == 4
    patients = [line for line in lines if line.startswith("patient,")]
    assert [p.split(",")[2:4] for p in patients] == [
        [f"{folder}/7", "both"],
        [f"{folder}/8", "left"],
    ]
    assert "1 of 4 images are in no patient row:" in err
    assert f"{folder}/scan.jpeg: the name does not end in _left or _right" in err
    assert f"{folder}/8 (left only)" in err


def test_no_pairs_at_all_writes_the_image_rows_and_says_why(
    model_folder, synthetic_data, tmp_path, capsys
):
    folder = copy_images(
        synthetic_data, tmp_path / "scans", {"a.jpeg": "1_left", "b.png": "1_right"}
    )
    out = tmp_path / "preds.csv"
    code, text, _ = predict(["--model", str(model_folder), str(folder), "--out", str(out),
                             "--by-patient"], capsys)  # fmt: skip
    assert code == 0
    frame = pd.read_csv(out)
    assert (frame["level"] == "image").all() and len(frame) == 2 and frame["patient"].isna().all()
    assert "--by-patient: none of the 2 image names pairs eyes" in text


def test_without_the_flag_the_output_is_as_before(model_folder, synthetic_data, tmp_path, capsys):
    folder = copy_images(synthetic_data, tmp_path / "pair", {"7_left.jpeg": "1_left"})
    code, csv, err = predict(["--model", str(model_folder), str(folder)], capsys)
    assert code == 0 and csv.splitlines()[0].startswith("image,grade,p0")
    assert "patient" not in err
