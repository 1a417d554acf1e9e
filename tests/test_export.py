"""The winner leaves the study: the sweep's export (results/<study>/best/) and `python -m study.export`.

Run: .venv/bin/pytest tests/test_export.py  (reuses conftest's real 2-trial sweep, `small_study`)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from retina.engine import build_loss, evaluate
from retina.errors import RetinaError
from retina.files import write_folder_atomic
from retina.heads import grades_of
from retina.model_file import load_model
from retina.models import build_model
from retina.thresholds import DEFAULT_THRESHOLDS
from retina.tta import dihedral_view, with_views
from study.conclude.export import check_target, export_winner, prepare_study_data
from study.conclude.onnx_file import (
    onnx_max_difference,
    onnx_metadata,
    onnx_parity,
    parity_images,
    write_onnx,
)
from study.conclude.parity import compare_logits
from study.record.layout import EXPORT_FAILED_FILE
from study.record.ranking import best_trial_ids
from tests.helpers.cli import run_cli

CPU = torch.device("cpu")


def study_of(folder: Path) -> tuple[dict, pd.DataFrame]:
    return json.loads((folder / "study.json").read_text()), pd.read_parquet(
        folder / "trials.parquet"
    )


def test_the_sweep_exports_its_best_trial_which_reloads_to_its_test_metrics(small_study):
    best = small_study / "best"
    assert sorted(p.name for p in best.iterdir()) == ["card.md", "model.onnx", "model.pt"]
    study, trials = study_of(small_study)
    winner = best_trial_ids(trials, "best_val_kappa", "max")[0]
    record = torch.load(best / "model.pt", weights_only=True)  # plain values only
    assert record["info"]["trial_id"] == winner
    size = int(trials.set_index("trial_id").loc[winner, "image_size"])  # searched: 32 or 48
    assert record["arch"] == "resnet18" and record["image_size"] == size
    assert record["preprocessing"] == "none" and len(record["grade_names"]) == 5
    assert record["info"]["config"]["lr"] == pytest.approx(
        float(trials.set_index("trial_id").loc[winner, "lr"])
    )
    assert "optimizer" not in record  # weights only, no training state

    loaded = load_model(best)
    assert loaded.tta == record["tta"] == study["config"]["tta"] == 8
    # the conftest's private cache, at the winner's size: reused, not rebuilt
    data = prepare_study_data(study).at_size(size)
    row = trials.set_index("trial_id").loc[winner]

    def test(model: torch.nn.Module):
        return evaluate(model, data.loader("test", 64, CPU, train=False), build_loss(False), CPU)

    metrics = test(with_views(loaded.model, loaded.tta))  # the study tested its 8 views
    assert metrics.n_images == sum(study["data"]["class_counts"]["test"])
    assert metrics.accuracy == pytest.approx(row["test_acc"])
    assert metrics.kappa == pytest.approx(row["test_kappa"], abs=1e-9)
    assert metrics.loss == pytest.approx(row["test_loss"], rel=1e-4)
    assert test(loaded.model).kappa == pytest.approx(row["test_kappa_1view"], abs=1e-9)


def test_onnx_gives_pytorchs_views_on_real_images_at_any_batch(small_study):
    """The ONNX graph holds the study's 8 views: one call gives the tested model's output."""
    best = small_study / "best"
    assert onnx.load(str(best / "model.onnx")).opset_import[0].version >= 17
    study, _ = study_of(small_study)
    loaded = load_model(best)  # its ONNX input is fixed at the winning trial's size
    x = parity_images(prepare_study_data(study).at_size(loaded.image_size))
    model = with_views(loaded.model, 8)  # one forward per view, as the test ran
    session = ort.InferenceSession(str(best / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["tta"] == "8"
    for batch in (x[:1], x[:3], x):
        got = session.run(["logits"], {"images": batch.numpy()})[0]
        with torch.inference_mode():
            expected = model(batch).numpy()
        assert got.shape == (len(batch), 5)
        assert np.abs(got - expected).max() <= 1e-4
        assert np.allclose(np.exp(got).sum(axis=1), 1.0, atol=1e-5)  # log of a mean softmax


def test_the_card_says_what_the_model_is_and_is_not(small_study):
    card = (small_study / "best" / "card.md").read_text()
    study, trials = study_of(small_study)
    winner = trials.set_index("trial_id").loc[best_trial_ids(trials, "best_val_kappa", "max")[0]]
    assert "a research model, not a medical device" in card.lower()
    assert study["data"]["dataset_hash"] in card
    assert "softmax probabilities of 8 dihedral views of each image" in card  # tta: 8
    assert f"test quadratic weighted kappa {winner['test_kappa_1view']:.4g}" in card
    assert "majority baseline" in card and "split seed 0" in card
    assert f"{winner['test_acc']:.4g}" in card and f"{winner['best_val_acc']:.4g}" in card
    assert "How it was selected" in card and "onnxruntime" in card and "torch" in card


def test_export_cli_exports_another_trial_to_another_folder(small_study, tmp_path):
    _, trials = study_of(small_study)
    ranked = best_trial_ids(trials, "best_val_kappa", "max")
    # The finished study deleted the checkpoints it no longer needs: the last trial's are gone.
    proc = run_cli("study.export", str(small_study), "--trial", ranked[-1], "--out", str(tmp_path))
    assert proc.returncode == 2 and "keep_checkpoints: all" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    other = ranked[0]  # kept (the winner): exported again, by id, elsewhere
    out = tmp_path / "exports" / "other"
    proc = run_cli("study.export", str(small_study), "--trial", other, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"exported trial {other}" in proc.stdout and "model.onnx" in proc.stdout
    record = torch.load(out / "model.pt", weights_only=True)
    assert record["info"]["trial_id"] == other
    assert f"--trial {other}" in (out / "card.md").read_text()
    assert [p.name for p in out.parent.iterdir()] == ["other"]  # no temp folder left behind


def test_a_missing_checkpoint_names_the_trial_and_the_way_out(small_study, tmp_path):
    copy = tmp_path / "small"
    copy.mkdir()
    for name in ("study.json", "trials.parquet"):  # no tune/: the checkpoints are gone
        shutil.copy(small_study / name, copy / name)
    proc = run_cli("study.export", str(copy))
    _, trials = study_of(small_study)
    winner = best_trial_ids(trials, "best_val_kappa", "max")[0]
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in proc.stderr
    assert f"trial {winner}" in lines[-1] and "--trial ID" in lines[-1]
    assert not (copy / "best").exists()


def test_onnx_that_disagrees_with_pytorch_fails_the_export(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    x = torch.randn(4, 3, 32, 32)
    write_onnx(model, x, tmp_path / "model.onnx")
    assert onnx_max_difference(tmp_path / "model.onnx", model, x) <= 1e-4
    with torch.no_grad():
        model.fc.bias += 1e-3  # the PyTorch model moves on; the ONNX file does not
    with pytest.raises(RetinaError, match="disagrees with PyTorch"):
        onnx_max_difference(tmp_path / "model.onnx", model, x)


def test_a_model_with_logits_in_the_thousands_exports_with_parity(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    with torch.no_grad():  # as a resnet from scratch trained with a large lr: logits of +-1e3
        model.fc.weight *= 1e3
        model.fc.bias *= 1e3
    x = torch.randn(8, 3, 32, 32)
    write_onnx(model, x, tmp_path / "model.onnx")
    parity = onnx_parity(tmp_path / "model.onnx", model, x)
    assert parity.ok and parity.scale > 300 and parity.grade_mismatches == 0
    with torch.no_grad():  # a real mismatch at that scale is still refused
        model.fc.bias[1] += 1.0
    with pytest.raises(RetinaError, match="disagrees with PyTorch.*logit/score difference"):
        onnx_parity(tmp_path / "model.onnx", model, x)


def test_another_models_onnx_file_is_refused(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    x = torch.randn(4, 3, 32, 32)
    write_onnx(build_model("resnet18", pretrained=False).eval(), x, tmp_path / "model.onnx")
    with pytest.raises(RetinaError, match="disagrees with PyTorch"):
        onnx_parity(tmp_path / "model.onnx", model, x)


def test_parity_scales_with_the_logits_and_checks_grades_and_probabilities():
    rng = np.random.default_rng(0)
    big = rng.normal(0, 2400, (32, 5))
    rounded = big + rng.normal(0, 2e-3, big.shape)  # float32-sized noise at that scale
    assert compare_logits(big, rounded).ok
    small = rng.normal(0, 1, (32, 5))
    assert not compare_logits(small, small + 2e-3).ok  # the same noise on small logits
    flipped = small.copy()
    flipped[0, [0, 1]] = [5.0, 0.0]
    other = flipped.copy()
    other[0, [0, 1]] = [0.0, 5.0]  # one grade changes with the probabilities: refused
    verdict = compare_logits(flipped, other)
    assert not verdict.ok and any("grades differ" in p for p in verdict.problems())
    tie = small.copy()
    tie[0] = [3.0, 3.0 + 1e-5, 0, 0, 0]  # PyTorch itself on a knife edge: a flip is rounding
    swapped = tie.copy()
    swapped[0, :2] = tie[0, [1, 0]]
    assert compare_logits(tie, swapped).ok
    assert not compare_logits(small, np.full_like(small, np.nan)).ok


def test_a_failed_export_is_the_sweeps_last_line_until_one_works(small_study, tmp_path):
    copy = tmp_path / "small"
    copy.mkdir()
    for name in ("study.json", "trials.parquet"):  # no tune/: the export must fail
        shutil.copy(small_study / name, copy / name)
    lines, line = export_winner(copy, None, pd.read_parquet(copy / "trials.parquet"))
    assert lines[0].startswith("export failed: ")
    assert line.startswith("EXPORT FAILED: ") and "python -m study.export" in line
    assert "no checkpoint" in line and len(line.splitlines()) == 1
    assert (copy / EXPORT_FAILED_FILE).read_text().startswith("export failed: ")
    shutil.copytree(small_study / "tune", copy / "tune")
    study, _ = study_of(small_study)
    trials = pd.read_parquet(copy / "trials.parquet")
    lines, line = export_winner(copy, prepare_study_data(study), trials)
    assert (copy / "best" / "model.onnx").exists(), lines
    assert line is None and not (copy / EXPORT_FAILED_FILE).exists()


def test_a_regress_model_exports_its_score_and_thresholds_with_parity(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False, num_classes=1).eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.inference_mode():
        scores = np.sort(model(x)[:, 0].numpy())
    cuts = [float(scores[i - 1] + scores[i]) / 2 for i in (3, 6, 10, 13)]  # every grade used
    path = tmp_path / "model.onnx"
    write_onnx(model, x, path, onnx_metadata("regress", cuts))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["score"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["head"] == "regress" and json.loads(meta["thresholds"]) == cuts
    parity = onnx_parity(path, model, x)  # the grades cut by the file's own thresholds
    assert parity.ok and parity.grade_mismatches == 0
    got = session.run(["score"], {"images": x.numpy()})[0]
    expected = grades_of(model(x).detach(), cuts).numpy()
    assert np.array_equal(np.digitize(got[:, 0], cuts), expected)
    assert sorted(set(expected.tolist())) == [0, 1, 2, 3, 4]
    with torch.no_grad():
        model.fc.bias += 0.05  # a real mismatch: scores move, and grades with them
    with pytest.raises(RetinaError, match="disagrees with PyTorch.*score difference"):
        onnx_parity(path, model, x)


def test_a_regress_model_exports_the_mean_score_of_its_views_with_parity(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False, num_classes=1).eval()
    x = torch.randn(8, 3, 32, 32)
    path = tmp_path / "model.onnx"
    meta = onnx_metadata("regress", list(DEFAULT_THRESHOLDS), 4)
    write_onnx(with_views(model, 4, stacked=True), x, path, meta)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["tta"] == "4"
    assert onnx_parity(path, with_views(model, 4), x).ok  # against the views, one per forward
    got = session.run(["score"], {"images": x.numpy()})[0]
    with torch.inference_mode():
        mean = torch.stack([model(dihedral_view(x, k)) for k in range(4)]).mean(0)
    assert got.shape == (8, 1) and np.allclose(got, mean.numpy(), atol=1e-4)
    with pytest.raises(RetinaError, match="disagrees with PyTorch.*score difference"):
        onnx_parity(path, model, x)  # the image as is is not what the file computes


def test_an_export_replaces_only_model_folders_and_never_half(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.jpeg").write_bytes(b"x")
    with pytest.raises(RetinaError, match="not an exported model"):
        check_target(tmp_path / "data")
    best = tmp_path / "best"
    write_folder_atomic(best, lambda tmp: (tmp / "model.pt").write_text("old"))

    def broken(tmp: Path) -> None:
        (tmp / "model.pt").write_text("new, half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_folder_atomic(best, broken)
    assert (best / "model.pt").read_text() == "old"
    write_folder_atomic(best, lambda tmp: (tmp / "model.pt").write_text("new"))
    assert (best / "model.pt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "data"]


def test_what_a_killed_export_left_is_removed_or_put_back_by_the_next(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    host, dead = socket.gethostname(), int(finished.stdout)
    best = tmp_path / "best"
    # Killed between its two renames: the previous export set aside, the new one not yet in.
    old = tmp_path / f".best.old-{host}-{dead}-0badc0de"
    half = tmp_path / f".best.tmp-{host}-{dead}-0badc0de"
    running = tmp_path / f".best.tmp-{host}-{os.getpid()}-0badc0de"  # an export still running
    elsewhere = tmp_path / f".best.tmp-other-host-{dead}-0badc0de"  # a shared disk's other user
    for folder, text in ((old, "previous"), (half, "half"), (running, "x"), (elsewhere, "x")):
        folder.mkdir()
        (folder / "model.pt").write_text(text)
    seen = {}

    def fill(tmp: Path) -> None:
        seen["before"] = (best / "model.pt").read_text()
        (tmp / "model.pt").write_text("new")

    write_folder_atomic(best, fill)
    assert seen["before"] == "previous"  # the previous export was put back first
    assert (best / "model.pt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["best", running.name, elsewhere.name]
    )
