"""python -m retina.predict with the model the conftest's real sweep exported (`small_study`).

Run: .venv/bin/pytest tests/test_predict.py
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from retina.cache import build_cache
from retina.cli import run_main
from retina.engine import build_loss, evaluate
from retina.errors import RetinaError
from retina.grading import _Batcher, decoded_chunks
from retina.loader import BatchLoader
from retina.manifest import read_manifest
from retina.metrics import EpochMetrics, confusion_matrix
from retina.model_file import LoadedModel, load_model, model_record
from retina.models import build_model
from retina.predict import main
from tests.helpers.cli import run_cli
from tests.test_images import png_claiming_size

PROB_COLUMNS = [f"p{g}" for g in range(5)]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model_dir(small_study) -> Path:
    return small_study / "best"


def lab_copy(kaggle: Path, root: Path, n_train: int = 12, n_test: int = 6) -> Path:
    """A course-lab layout (headerless name/label files, images in data/) of kaggle's first images."""
    labels = pd.read_csv(kaggle / "trainLabels.csv").head(n_train + n_test)
    (root / "data").mkdir(parents=True)
    for part, rows in (("train", labels.head(n_train)), ("test", labels.tail(n_test))):
        for name in rows["image"]:
            shutil.copy(kaggle / "train" / f"{name}.jpeg", root / "data" / f"{name}.jpeg")
        (root / f"{part}_img.csv").write_text("".join(f"{n}\n" for n in rows["image"]))
        (root / f"{part}_label.csv").write_text("".join(f"{g}\n" for g in rows["level"]))
    return root


def check_rows(frame: pd.DataFrame, threshold: float | None = None) -> None:
    """`threshold`: the model's referable threshold (model.pt), None: referable = grade >= 2."""
    graded = frame[frame["grade"].notna()]
    assert np.allclose(graded[PROB_COLUMNS].sum(axis=1), 1.0, atol=1e-5)
    assert (graded["grade"] == graded[PROB_COLUMNS].to_numpy().argmax(axis=1)).all()
    # The score is the expected grade of the model's own softmax (p0..p4 are temperature-scaled).
    assert graded["score"].between(0, 4).all()
    if threshold is None:
        assert (graded["referable"] == (graded["grade"] >= 2)).all()
    else:  # the sweep's summary.json chose it on val (study.analyze.referable)
        high = graded[PROB_COLUMNS[2:]].to_numpy(np.float64).sum(axis=1)
        assert (graded["referable"] == (high >= threshold)).all()
    assert graded["error"].isna().all()
    # P(referable) is p2+p3+p4 of the (temperature-scaled) probabilities
    high = graded[PROB_COLUMNS[2:]].to_numpy(np.float64).sum(axis=1)
    assert graded["p_referable"].to_numpy() == pytest.approx(high)


def test_datasets_in_both_layouts_are_graded_and_scored(model_dir, synthetic_data, tmp_path):
    lab = lab_copy(synthetic_data, tmp_path / "lab")
    out = tmp_path / "preds.parquet"
    proc = run_cli(
        "retina.predict", "--model", str(model_dir), str(synthetic_data), str(lab),
        "--out", str(out), "--batch-size", "16", "--workers", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    frame = pd.read_parquet(out)
    assert list(frame.columns) == [
        "image", "layout", "label", "grade", *PROB_COLUMNS, "score", "p_referable", "referable",
        "error",
    ]  # fmt: skip
    assert frame["layout"].tolist() == ["kaggle"] * (len(frame) - 18) + ["lab"] * 18
    truth = pd.read_csv(synthetic_data / "trainLabels.csv")
    assert len(frame) == len(truth) + 18
    kaggle_rows = frame.head(len(truth))
    assert kaggle_rows["image"].tolist() == truth["image"].tolist()
    assert kaggle_rows["label"].tolist() == truth["level"].tolist()
    assert frame.tail(18)["label"].tolist() == truth["level"].head(18).tolist()  # the lab copy
    check_rows(frame, load_model(model_dir).referable_threshold)
    accuracy = (frame["label"] == frame["grade"]).mean()
    assert f"against the labels ({len(frame)} images): accuracy {accuracy:.3f} [" in proc.stdout
    assert "percentile bootstrap over patients" in proc.stdout  # Kaggle's <id>_left/_right
    assert "per patient (" in proc.stdout
    assert "confusion matrix" in proc.stdout and "trained and selected on" in proc.stdout


def broken_files(folder: Path) -> dict[str, str]:
    """name -> the start of the reason predict must give."""
    folder.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG")
    (folder / "cut.jpeg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "notes.jpeg").write_text("not a photograph\n")
    (folder / "empty.jpg").write_bytes(b"")
    png_claiming_size(folder / "bomb.png", 10_000, 9_000)
    return {
        "cut.jpeg": "truncated or corrupt JPEG",
        "notes.jpeg": "not an image",
        "empty.jpg": "empty file",
        "bomb.png": "image too large",
    }


def test_each_broken_file_gets_its_row_and_the_rest_are_graded(model_dir, synthetic_data, tmp_path):
    folder = tmp_path / "mixed"
    expected = broken_files(folder)
    good = sorted((synthetic_data / "train").glob("*.jpeg"))[:5]
    for path in good:
        shutil.copy(path, folder / path.name)
    missing = tmp_path / "gone.jpeg"
    out = tmp_path / "preds.csv"
    argv = ["--model", str(model_dir), str(folder), str(missing), "--out", str(out)]
    assert run_main(main, [*argv, "--workers", "2", "--batch-size", "2"]) == 0
    frame = pd.read_csv(out).set_index("image")
    assert len(frame) == len(expected) + len(good) + 1
    for name, reason in expected.items():
        row = frame.loc[str(folder / name)]
        assert row["error"].startswith(reason) and pd.isna(row["grade"]), (name, row["error"])
        assert row[PROB_COLUMNS].isna().all()
    assert frame.loc[str(missing), "error"].startswith("cannot read file")
    graded = frame.loc[[str(folder / p.name) for p in good]]
    assert graded["grade"].notna().all()
    check_rows(graded.reset_index(), load_model(model_dir).referable_threshold)


def one_error_line(capsys, argv: list[str]) -> str:
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_wrong_model_paths_and_empty_inputs_exit_2_with_one_line(model_dir, tmp_path, capsys):
    assert "does not exist" in one_error_line(capsys, ["--model", str(tmp_path / "no"), "x"])
    (tmp_path / "not-a-model").mkdir()
    assert "no model.pt" in one_error_line(capsys, ["--model", str(tmp_path / "not-a-model"), "x"])
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "model.pt").write_bytes((model_dir / "model.pt").read_bytes()[:5000])
    assert "damaged" in one_error_line(capsys, ["--model", str(damaged), "x"])
    (tmp_path / "empty").mkdir()
    line = one_error_line(capsys, ["--model", str(model_dir), str(tmp_path / "empty")])
    assert "holds no image files" in line
    broken_files(tmp_path / "all-bad")
    line = one_error_line(capsys, ["--model", str(model_dir), str(tmp_path / "all-bad")])
    assert "none of the 4 images could be graded" in line


def test_a_wrong_model_path_from_the_command_line_gives_no_traceback(tmp_path):
    proc = run_cli("retina.predict", "--model", str(tmp_path / "nowhere"), str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: model folder {tmp_path / 'nowhere'} does not exist; export one with "
        "`python -m study.export results/<study>` (it writes <study>/best/)"
    ]


def test_predict_feeds_the_model_exactly_the_cache_pixels(synthetic_data, private_cache):
    manifest = read_manifest(synthetic_data)
    cache = build_cache(manifest, 32, cache_root=private_cache, progress=False).open()
    chunks = list(decoded_chunks(manifest.paths, 32, "none", workers=2, chunk=7, ahead=3))
    assert [bad for _, _, bad in chunks] == [[]] * len(chunks)
    rows = np.concatenate([r for _, r, _ in chunks])
    assert rows.shape == cache.shape and np.array_equal(rows, cache)

    # ...and normalises them into the very floats evaluation feeds the model.
    loaded = LoadedModel(
        model=torch.nn.Identity(), arch="resnet18", image_size=32, preprocessing="none",
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), grade_names=[], info={},
        path=Path("."),
    )  # fmt: skip
    batcher = _Batcher(loaded, 17, torch.device("cpu"), len(manifest))  # 16 rows: no flush yet
    for i in range(16):
        batcher.add(i, rows[i])
    cpu = torch.device("cpu")
    x, _ = next(iter(BatchLoader(cache, manifest.labels, np.arange(16), 16, cpu, train=False)))
    assert torch.equal(batcher.inputs(), x)


def test_the_exported_model_loads_with_its_preprocessing(model_dir):
    loaded = load_model(model_dir)
    trials = pd.read_parquet(model_dir.parent / "trials.parquet").set_index("trial_id")
    winner = torch.load(model_dir / "model.pt", weights_only=True)["info"]["trial_id"]
    assert loaded.image_size == trials.loc[winner, "image_size"]  # the trial's searched size
    assert loaded.preprocessing == "none"
    assert not loaded.model.training


def test_predict_matches_the_studys_own_test_predictions(
    small_study, model_dir, synthetic_data, tmp_path
):
    """model.pt carries the summary's temperature and threshold and the study's 8 test views;
    predict on the study's own test images (by default, and with --tta 8) gives the grades and
    temperature-scaled probabilities of predictions/ and, at the stored threshold, the
    summary's test sensitivity and specificity; --tta 1 gives the study's one-view kappa."""
    from study.analyze.calibration import apply_temperature

    record = torch.load(model_dir / "model.pt", weights_only=True)
    summary = json.loads((small_study / "summary.json").read_text())
    best = summary["referable"]["best"]
    assert best["trial_id"] == record["info"]["trial_id"]
    assert record["tta"] == 8  # the conftest's sweep tests with every dihedral view
    temperature = summary["calibration"]["best"]["temperature"]
    assert record["temperature"] == temperature
    assert record["referable_threshold"] == best["threshold"]
    stored = pd.read_parquet(small_study / "predictions" / f"{best['trial_id']}.parquet")
    test = stored[stored["split"] == "test"].set_index("image")

    def predict(*extra: str) -> pd.DataFrame:
        out = tmp_path / "preds.parquet"
        argv = ["--model", str(model_dir), str(synthetic_data), "--out", str(out), *extra]
        assert run_main(main, [*argv, "--workers", "2"]) == 0
        return pd.read_parquet(out).set_index("image").loc[test.index]

    ours = predict()
    assert predict("--tta", "8").equals(ours)  # the default is the study's own
    assert ours["grade"].tolist() == test["predicted"].tolist()
    expected = apply_temperature(test[PROB_COLUMNS].to_numpy(np.float64), temperature)
    assert np.allclose(ours[PROB_COLUMNS].to_numpy(), expected, atol=1e-4)
    positive = test["true"] >= 2
    flagged = ours["referable"].astype(bool)
    if positive.any():
        assert (flagged & positive).sum() / positive.sum() == pytest.approx(
            best["test_image"]["sensitivity"]
        )
    assert (~flagged & ~positive).sum() / (~positive).sum() == pytest.approx(
        best["test_image"]["specificity"]
    )
    trials = pd.read_parquet(small_study / "trials.parquet").set_index("trial_id")
    one = predict("--tta", "1")
    conf = confusion_matrix(test["true"].to_numpy(int), one["grade"].to_numpy(int))
    kappa = EpochMetrics.from_confusion(conf, float("nan"), 0.0).kappa
    assert kappa == pytest.approx(trials.loc[best["trial_id"], "test_kappa_1view"], abs=1e-9)


def test_a_regress_model_grades_as_evaluation_in_torch_with_its_thresholds(
    synthetic_data, private_cache, tmp_path
):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False, num_classes=1).eval()
    manifest = read_manifest(synthetic_data)
    cache = build_cache(manifest, 32, cache_root=private_cache, progress=False).open()
    rows = np.arange(len(manifest))
    loader = BatchLoader(cache, manifest.labels, rows, 16, CPU, train=False)
    first = evaluate(model, loader, build_loss(False, head="regress"), CPU, keep_probabilities=True)
    # Cuts halfway between neighbouring scores at the quintiles: every grade gets images.
    ordered = np.sort(first.scores)
    at = [len(ordered) * q // 5 for q in (1, 2, 3, 4)]
    cuts = [float(ordered[i - 1] + ordered[i]) / 2 for i in at]
    record = model_record(
        model, arch="resnet18", image_size=32, preprocessing="none", info={},
        head="regress", thresholds=cuts,
    )  # fmt: skip
    record["referable_platt"] = [1.3, -2.0]  # as export stores the study's fit on val
    (tmp_path / "best").mkdir()
    torch.save(record, tmp_path / "best" / "model.pt")
    loaded = load_model(tmp_path / "best")
    assert loaded.head == "regress" and loaded.thresholds == pytest.approx(cuts)
    assert loaded.platt == (1.3, -2.0)

    out = tmp_path / "preds.parquet"
    argv = ["--model", str(tmp_path / "best"), str(synthetic_data), "--out", str(out),
            "--batch-size", "16", "--workers", "1", "--device", "cpu"]  # fmt: skip
    assert run_main(main, argv) == 0
    frame = pd.read_parquet(out)
    expected = evaluate(
        model, loader, build_loss(False, head="regress"), CPU, keep_probabilities=True,
        thresholds=cuts,
    )  # fmt: skip
    assert frame["grade"].tolist() == expected.grades.tolist()
    assert sorted(set(expected.grades.tolist())) == [0, 1, 2, 3, 4]
    assert frame["score"].to_numpy() == pytest.approx(expected.scores, abs=1e-5)
    assert frame[PROB_COLUMNS].isna().all().all()  # a regress model has no probabilities
    assert (frame["referable"] == (frame["grade"] >= 2)).all()
    # its calibrated P(referable): the stored logistic of its score
    platt = 1 / (1 + np.exp(-(1.3 * frame["score"].to_numpy(np.float64) - 2.0)))
    assert frame["p_referable"].to_numpy() == pytest.approx(platt, abs=1e-5)
    record["referable_platt"] = [float("nan"), 0.0]  # a damaged fit: the file says so
    torch.save(record, tmp_path / "best" / "model.pt")
    with pytest.raises(RetinaError, match="damaged"):
        load_model(tmp_path / "best")


def test_by_patient_gives_the_studys_test_grades_and_their_max_per_patient(
    small_study, model_dir, synthetic_data, tmp_path
):
    """--by-patient on the study's own data: the image rows of the test images are the
    study's test predictions, each test patient's row is the max of its two eyes, referable when
    either eye is, and the patient-level figures are the summary's `patients` (one rule,
    retina.patients); the sweep's held-out test said them per patient too."""
    from retina.metrics import confusion_matrix, quadratic_weighted_kappa

    summary = json.loads((small_study / "summary.json").read_text())
    view = summary["patients"]["best"]
    stored = pd.read_parquet(small_study / "predictions" / f"{view['trial_id']}.parquet")
    test = stored[stored["split"] == "test"]
    out = tmp_path / "preds.parquet"
    argv = ["--model", str(model_dir), str(synthetic_data), "--out", str(out), "--by-patient"]
    assert run_main(main, [*argv, "--workers", "2"]) == 0
    frame = pd.read_parquet(out)
    images = frame[frame["level"] == "image"].set_index("image").loc[test["image"]]
    assert images["grade"].tolist() == test["predicted"].tolist()
    assert images["patient"].tolist() == test["patient"].tolist()  # the manifest's patients
    patients = frame[frame["level"] == "patient"].set_index("patient")
    mine = patients.loc[sorted(test["patient"].unique())]
    by_patient = test.groupby("patient")
    assert mine["grade"].tolist() == by_patient["predicted"].max().tolist()
    assert mine["label"].tolist() == by_patient["true"].max().tolist()
    assert mine["referable"].tolist() == images.groupby("patient")["referable"].any().tolist()
    assert (mine["eye"] == "both").all()  # the synthetic data has two eyes per patient
    assert view["patients"] == view["both_eyes"] == len(mine) and view["one_eye"] == 0
    label, grade = mine["label"].to_numpy(int), mine["grade"].to_numpy(int)
    positive, flagged = label >= 2, grade >= 2
    per_patient = view["per_patient"]
    if positive.any():
        assert per_patient["sensitivity"] == pytest.approx(
            (positive & flagged).sum() / positive.sum()
        )
    assert per_patient["specificity"] == pytest.approx(
        (~positive & ~flagged).sum() / (~positive).sum()
    )
    kappa = quadratic_weighted_kappa(confusion_matrix(label, grade))
    assert per_patient["kappa_both_eyes"] == pytest.approx(kappa)
    log = (small_study.parent.parent / "small-sweep.log").read_text()
    assert f"per patient: {len(mine)} patients ({len(mine)} both eyes, 0 one eye)" in log
    assert f"quadratic kappa {kappa:.3f} on the {len(mine)} with both eyes graded" in log
