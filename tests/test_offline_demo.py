"""The demo space runs offline (`on_missing_weights: skip`), and unchanged when the weights exist."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch
import torchvision

from retina.errors import RetinaError
from retina.models import weights_path
from study.define.schema import load_study, study_to_dict
from study.run.weights_policy import skip_missing_pretrained
from tests.helpers.cli import run_cli
from tests.helpers.processes import NO_DASHBOARD

UNREACHABLE_MIRROR = "http://127.0.0.1:9/models"  # a closed port: "offline", at once
# The demo space, small: one pretrained and one scratch trial of resnet18 at 32 px, one epoch,
# and its confirm stage (head: one cell here) with one seed.
TINY_DEMO = [*NO_DASHBOARD,
    "--set", "search.algorithm=random", "--set", "space.pretrained={grid: [true, false]}",
    "--set", "space.arch=resnet18", "--set", "num_samples=1", "--set", "data.image_size=32",
    "--set", "space.epochs=1", "--set", "space.warmup_epochs=0",  # one epoch: no warm-up,
    "--set", "scheduler.grace_period=1", "--set", "space.head=classify",  # and ASHA's rung at 1
    "--set", "space.batch_size=16", "--set", "test_top_k=1",
    "--set", "max_concurrent=2", "--set", "confirm.seeds=1",
]  # fmt: skip


def _offline_env(torch_home) -> dict:
    return {
        **os.environ,
        "TORCH_HOME": str(torch_home),
        "RETINA_WEIGHTS_MIRROR": UNREACHABLE_MIRROR,
    }


def _sweep(data, results, name, env, *extra):
    return run_cli(
        "study.sweep", "search_spaces/demo.yaml", "--data", str(data), "--results", str(results),
        "--name", name, *TINY_DEMO, *extra, env=env,
    )  # fmt: skip


def _write_fake_weights(torch_home, monkeypatch, arch="resnet18"):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    path = weights_path(arch)  # torchvision's file name under $TORCH_HOME/hub/checkpoints
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(getattr(torchvision.models, arch)().state_dict(), path)
    return path


@pytest.mark.slow
def test_demo_runs_offline_without_weights_and_says_so(synthetic_data, tmp_path):
    torch_home = tmp_path / "empty-torch-home"
    proc = _sweep(synthetic_data, tmp_path / "results", "offline", _offline_env(torch_home))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "ImageNet weights missing" in line]
    assert len(warnings) == 1
    assert "resnet18-f37072fd.pth" in warnings[0] and "make weights" in warnings[0]

    folder = tmp_path / "results" / "offline"
    record = json.loads((folder / "study.json").read_text())
    assert record["skipped_pretrained"] == ["resnet18"]
    assert record["config"]["space"]["pretrained"] is False
    trials = pd.read_parquet(folder / "trials.parquet")
    search = trials[trials["stage"] == "search"]
    assert len(search) == 1 and not trials["pretrained"].any()
    assert list(trials["stage"]).count("confirm") == 1  # the demo's confirm stage ran offline
    assert set(trials["status"]) == {"TERMINATED"}
    report = (folder / "report.html").read_text()  # the final report the sweep wrote
    assert "id='skipped-pretrained'" in report and "make weights" in report
    assert "live-reload" not in report


@pytest.mark.slow
def test_with_weights_in_torch_home_the_pretrained_trials_run(
    synthetic_data, tmp_path, monkeypatch
):
    torch_home = tmp_path / "torch-home"
    _write_fake_weights(torch_home, monkeypatch)
    # The offline run above exports and confirms as `make sweep` does; this one needs neither.
    env = _offline_env(torch_home)
    no_more = ("--set", "export=false", "--set", "confirm.seeds=0")
    proc = _sweep(synthetic_data, tmp_path / "results", "online", env, *no_more)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ImageNet weights missing" not in proc.stderr

    folder = tmp_path / "results" / "online"
    record = json.loads((folder / "study.json").read_text())
    assert record["skipped_pretrained"] == []
    trials = pd.read_parquet(folder / "trials.parquet")
    assert sorted(trials[trials["stage"] == "search"]["pretrained"]) == [False, True]
    assert set(trials["status"]) == {"TERMINATED"}
    assert "id='skipped-pretrained'" not in (folder / "report.html").read_text()


@pytest.mark.slow
def test_a_fixed_true_is_an_error_even_with_skip(synthetic_data, tmp_path):
    env = _offline_env(tmp_path / "empty-torch-home")
    proc = run_cli(
        "study.sweep", "search_spaces/demo.yaml", "--data", str(synthetic_data),
        "--results", str(tmp_path), "--set", "space.pretrained=true", env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "resnet18" in proc.stderr and "space.pretrained" in proc.stderr
    assert not (tmp_path / "demo" / "study.json").exists()


@pytest.mark.slow
def test_fail_is_the_default_and_keeps_stopping(synthetic_data, tmp_path):
    env = _offline_env(tmp_path / "empty-torch-home")
    proc = run_cli(
        "study.sweep", "search_spaces/demo.yaml", "--data", str(synthetic_data),
        "--results", str(tmp_path), "--set", "on_missing_weights=fail", env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "make weights" in proc.stderr
    assert "on_missing_weights: skip" in proc.stderr and "Traceback" not in proc.stderr
    for space in ("lab3", "full"):
        assert load_study(f"search_spaces/{space}.yaml").on_missing_weights == "fail"


def test_only_some_archs_missing_narrows_pretrained_for_every_arch(tmp_path, monkeypatch):
    _write_fake_weights(tmp_path / "torch-home", monkeypatch, "resnet18")
    monkeypatch.setenv("RETINA_WEIGHTS_MIRROR", UNREACHABLE_MIRROR)
    study = load_study(
        "search_spaces/demo.yaml",
        ["space.arch={choice: [resnet18, resnet34]}",
         "space.lr={depends_on: pretrained, values: {true: 0.001, false: 0.01}}"],
    )  # fmt: skip
    narrowed, skipped = skip_missing_pretrained(study)
    assert skipped == ["resnet18", "resnet34"]
    assert narrowed.space["pretrained"].to_yaml() is False
    assert narrowed.space["lr"].by == ((False, 0.01),)
    # The narrowed study is a valid study: what study.json records loads back.
    doc = study_to_dict(narrowed)
    from study.define.schema import study_from_dict

    assert study_from_dict(doc) == narrowed


def test_weights_present_change_nothing(tmp_path, monkeypatch):
    _write_fake_weights(tmp_path / "torch-home", monkeypatch, "resnet18")
    study = load_study("search_spaces/demo.yaml", ["space.arch=resnet18"])
    assert skip_missing_pretrained(study) == (study, [])


def test_a_bad_value_names_file_key_and_fix():
    with pytest.raises(RetinaError) as err:
        load_study("search_spaces/demo.yaml", ["on_missing_weights=maybe"])
    message = str(err.value)
    assert "search_spaces/demo.yaml" in message and "on_missing_weights" in message
    assert "fail, skip" in message
