"""conftest's small sweep runs under umask 000 with a private HOME and `--mlflow`: the MLflow store
holds one run per trial with per-epoch metrics, and Ray's token file is readable by its owner only."""

from __future__ import annotations

import multiprocessing
import os
import re
import stat
import subprocess
import sys

import pandas as pd
import pytest

from study.run.ray_token import make_private, make_token, token_file, warn_if_shared
from tests.helpers.cli import ROOT, run_cli


@pytest.fixture
def mlflow_sweep(small_study):
    """conftest's small sweep ran with `--mlflow`, a private HOME and umask 000: (results/<study>,
    the MLflow store's URI, the sweep's HOME, its output)."""
    base = small_study.parents[1]
    return (
        small_study,
        (base / "mlruns").as_uri(),
        base / "home",
        (base / "small-sweep.log").read_text(),
    )


@pytest.mark.slow
def test_mlflow_store_has_one_run_per_trial_with_metrics_per_epoch(mlflow_sweep, monkeypatch):
    from mlflow.tracking import MlflowClient

    folder, uri, _, _ = mlflow_sweep
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to read one
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(folder.name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    trials = pd.read_parquet(folder / "trials.parquet")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert len(runs) == len(trials) == 2
    by_lr = {float(run.data.params["lr"]): run for run in runs}
    for _, trial in trials.iterrows():
        run = _closest(by_lr, trial["lr"])  # params are logged as text
        assert run.info.status == "FINISHED"
        assert run.data.params["arch"] == "resnet18"
        history = client.get_metric_history(run.info.run_id, "val_kappa")
        mine = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(mine["epoch"])
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
            list(mine["val_kappa"])
        )


def _closest(by_lr: dict, lr: float):
    return by_lr[min(by_lr, key=lambda x: abs(x - lr))]


@pytest.mark.slow
def test_a_sweep_under_umask_000_leaves_the_token_file_private(mlflow_sweep):
    _, _, home, output = mlflow_sweep
    token = home / ".ray" / "auth_token"
    assert token.is_file(), "no token under the temporary HOME"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", token.read_text())  # the one the sweep made; Ray kept it
    # Said once, naming the file (the sweep ran in the shared folder this test's copy came from).
    said = re.findall(r"Ray token file (\S+): new, readable by you only", output)
    assert len(said) == 1 and said[0].endswith("/home/.ray/auth_token"), said
    assert "made readable by you only" not in output  # private from its first byte


def test_mlflow_missing_fails_before_ray_with_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['mlflow'] = None\n"  # as if the extra were not installed
        "from retina.cli import run_main; from study.sweep import main\n"
        f"raise SystemExit(run_main(main, ['search_spaces/demo.yaml', '--results', {str(tmp_path / 'r')!r}, '--mlflow']))"
    )
    proc = run_cli("study.sweep", "--help", timeout=120)  # the flag is documented
    assert "--mlflow" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[mlflow]'" in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()  # nothing ran: no results folder, no Ray


def test_token_file_is_made_private_or_warned_about(tmp_path, monkeypatch, capsys):
    path = tmp_path / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))  # Ray's own override of the path
    assert token_file() == path
    assert not make_private(path) and not warn_if_shared(path)  # no file: nothing to do
    path.write_text("secret")
    path.chmod(0o644)
    assert warn_if_shared(path)  # joining a cluster: not ours to change, say how
    assert f"chmod 600 {path}" in capsys.readouterr().err
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert make_private(path)  # our own Ray: fix it, and say so
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not make_private(path) and not warn_if_shared(path)  # once


def _make_token_when_told(path, go, made):
    go.wait()
    made.put(make_token(path, log=open(os.devnull, "w")))


def test_processes_making_the_token_at_once_agree_on_one(tmp_path, monkeypatch):
    """Two sweeps started at once on a fresh machine: each must find the same token (Ray's own
    check-then-write let each write its own; the node whose token was replaced timed out)."""
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    path = tmp_path / ".ray" / "auth_token"
    ctx = multiprocessing.get_context("fork")
    go, made = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_make_token_when_told, args=(path, go, made)) for _ in range(6)]
    for proc in procs:
        proc.start()
    go.set()  # all at once
    for proc in procs:
        proc.join(30)
    assert sorted(made.get(timeout=5) for _ in procs) == [False] * 5 + [True]
    assert re.fullmatch(r"[0-9a-f]{64}", path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["auth_token"]  # no draft left behind
    before = path.read_text()
    assert not make_token(path) and path.read_text() == before  # an existing token stands


@pytest.mark.parametrize("env", [{"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_TOKEN": "abc"}])
def test_no_token_file_when_ray_would_not_read_one(tmp_path, monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert not make_token(tmp_path / "auth_token")
    assert not (tmp_path / "auth_token").exists()
