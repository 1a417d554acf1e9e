"""Exposure and trust: the dashboard's interface, Ray's token authentication, safe loading of
checkpoints, file modes, and (sharing the same two sweeps) determinism on CPU.

    .venv/bin/pytest tests/test_reliability_security.py

Two real sweeps of one tiny study run in the background while the test looks at them from
outside: sockets from /proc/net/tcp*, an unauthenticated request to the Jobs API, the files
they leave. Run A uses the defaults; run B passes `--dashboard-host 0.0.0.0`, runs under
umask 000 and builds its own cache. Their per-epoch metrics must be identical.
"""

from __future__ import annotations

import ast
import os
import re
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from study.record.results import EPOCH_COLUMNS
from tests.helpers.cli import ROOT
from tests.helpers.processes import (
    listening_addresses,
    read_frame,
    running_sweep,
    sweep_args,
    wait_for,
)

pytestmark = pytest.mark.slow  # make test runs a module in one worker: 2 sweeps, made once
HARNESS = sorted([*(ROOT / "retina").rglob("*.py"), *(ROOT / "study").rglob("*.py")])
TIMING = ["seconds", "time_total_s", "train_images_per_s", "val_images_per_s"]
STUDY = ["--set", "num_samples=2", "--set", "max_concurrent=1", "--set", "space.epochs=2"]


@dataclass
class Observed:
    folder: Path
    cache: Path
    log: str
    returncode: int
    port: int
    listening: set[str]
    jobs_api_status: int


def jobs_api_status(port: int) -> int:
    """HTTP status of an unauthenticated request to the Jobs API (which runs code)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/jobs/", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def observe(tmp: Path, data: Path, name: str, *extra: str, umask: int | None = None) -> Observed:
    """Run a sweep in the background; look at its dashboard while it runs."""
    log, cache = tmp / f"{name}.log", tmp / f"cache-{name}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # Ray's own default
    env["RETINA_CACHE"] = str(cache)
    preexec = None if umask is None else (lambda: os.umask(umask))
    args = sweep_args(data, tmp, name, *STUDY, *extra, dashboard=True, report=True)
    with running_sweep(args, log, env=env, preexec_fn=preexec) as sweep:

        def dashboard_port():
            found = re.search(r"Ray dashboard: http://[^:\s]+:(\d+)", log.read_text())
            return int(found.group(1)) if found else None

        port = sweep.wait_for(dashboard_port, 240, "the dashboard URL")
        listening = wait_for(lambda: listening_addresses(port), 60, "the dashboard socket")
        status = jobs_api_status(port)
        sweep.driver.wait(timeout=400)
    driver = sweep.driver
    return Observed(tmp / name, cache, log.read_text(errors="replace"), driver.returncode,
                    port, listening, status)  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_data) -> dict[str, Observed]:
    tmp = tmp_path_factory.mktemp("security")
    a = observe(tmp, synthetic_data, "a")
    b = observe(tmp, synthetic_data, "b", "--dashboard-host", "0.0.0.0", umask=0)
    for run in (a, b):
        assert run.returncode == 0, run.log[-4000:]
    return {"a": a, "b": b}


# ---- the dashboard and token authentication ----------------------------------------------
def test_dashboard_listens_on_loopback_only_by_default(runs):
    a = runs["a"]
    assert a.listening == {"127.0.0.1"}, a.listening
    assert "warning: the Ray dashboard listens on" not in a.log


def test_exposed_dashboard_is_warned_about(runs):
    b = runs["b"]
    assert b.listening & {"0.0.0.0", "::"}, b.listening  # it did what was asked...
    warning = next(line for line in b.log.splitlines() if line.startswith("warning: the Ray"))
    assert "0.0.0.0" in warning and "Jobs API run code for anyone" in warning  # ...and said so
    assert "token authentication" in warning


def test_ray_token_authentication_is_on(runs):
    for run in runs.values():
        assert "Token authentication is enabled for this Ray cluster" in run.log
        assert run.jobs_api_status == 401  # no token, no Jobs API: exposed or not


TOKEN_MODULE = ROOT / "study" / "run" / "ray_token.py"  # reads the mode: is a token file used?


def test_harness_never_touches_ray_auth_settings():
    for path in [*HARNESS, ROOT / "Makefile", *(ROOT / "search_spaces").glob("*.yaml")]:
        if path != TOKEN_MODULE:
            text = path.read_text()
            assert "RAY_AUTH_MODE" not in text and "AUTH_MODE" not in text, path
    # The one module that names it only reads the environment: nothing is set, put or removed.
    for node in ast.walk(ast.parse(TOKEN_MODULE.read_text())):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            assert not any("environ" in ast.unparse(t) for t in targets), ast.unparse(node)
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            assert not re.search(r"putenv|unsetenv|environ\.(?!get\b)", called), called


# ---- loading what others could have written ----------------------------------------------
def test_every_torch_load_passes_weights_only_true():
    calls = 0
    for path in HARNESS:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name != "load" or not ast.unparse(func).startswith("torch."):
                continue
            calls += 1
            flags = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert "weights_only" in flags, f"{where}: torch.load without weights_only"
            assert isinstance(flags["weights_only"], ast.Constant), where
            assert flags["weights_only"].value is True, where
    assert calls >= 3  # the trainable, the held-out test, the ImageNet weights (and more)


def test_yaml_is_only_read_with_a_safe_loader():
    for path in HARNESS:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"
            ):  # fmt: skip
                loader = {k.arg: ast.unparse(k.value) for k in node.keywords}.get("Loader")
                assert loader in ("StudyLoader", "yaml.SafeLoader", "yaml.CSafeLoader"), (
                    f"{path}:{node.lineno}"
                )


# ---- file modes ----------------------------------------------------------------------------
def world_writable(*roots: Path) -> list[str]:
    out = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & stat.S_IWOTH:
                out.append(f"{oct(st.st_mode & 0o7777)} {path}")
    return out


def test_nothing_the_sweep_writes_is_world_writable(small_study, private_cache):
    assert world_writable(small_study, private_cache) == []


def test_nothing_is_world_writable_even_under_umask_000(runs):
    b = runs["b"]
    assert any(b.cache.rglob("images.npy"))  # run B built its cache under umask 000
    assert world_writable(b.folder, b.cache) == []


# ---- determinism ---------------------------------------------------------------------------
def by_config(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials and epochs keyed by the trial's hyperparameters (trial ids are random)."""
    trials = read_frame(folder, "trials.parquet")
    hyper = [c for c in ("arch", "pretrained", "lr", "batch_size", "epochs", "weight_decay",
                         "optimizer", "momentum", "class_weighted") if c in trials]  # fmt: skip
    trials["config"] = trials[hyper].astype(str).agg("|".join, axis=1)
    epochs = read_frame(folder, "epochs.parquet").merge(trials[["trial_id", "config"]])
    keep = [c for c in EPOCH_COLUMNS if c not in TIMING and c != "trial_id"]
    epochs = epochs[["config", *keep]].sort_values(["config", "epoch"]).reset_index(drop=True)
    return trials.set_index("config")[hyper].sort_index(), epochs


def test_same_study_same_seeds_gives_identical_configs_and_metrics(runs):
    trials_a, epochs_a = by_config(runs["a"].folder)
    trials_b, epochs_b = by_config(runs["b"].folder)
    assert len(trials_a) == 2 and len(epochs_a) == 4
    pd.testing.assert_frame_equal(trials_a, trials_b)  # the same configs
    pd.testing.assert_frame_equal(epochs_a, epochs_b, check_exact=True)  # to the last bit
