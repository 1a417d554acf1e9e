"""Shared fixtures: a private decode-once cache, a tiny synthetic data set, one real small sweep."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from study.run.ray_token import make_token, token_file
from tests.helpers.cli import run_cli, run_here
from tests.helpers.shared import made_once, own_copy

# A sweep small enough for 2 cores: 2 trials of resnet18, scratch (no weights offline), at a
# searched size: demo's seeded TPE draws 32 px for one trial and 48 px for the other, so the
# preflight builds two caches and every later step must use the trial's own.
SMALL_SWEEP = [
    "--set",
    "num_samples=2",
    "--set",
    "space.pretrained=false",
    "--set",
    "space.arch=resnet18",
    "--set",
    "space.head=classify",
    "--set",
    "data.image_size={choice: [32, 48]}",
    "--set",
    "space.epochs=2",
    "--set",
    "space.batch_size=16",
    "--set",
    "test_top_k=1",
    "--set",
    "max_concurrent=2",
    "--set",
    "confirm.seeds=0",
    "--set",
    "tta=8",
]  # fmt: skip  (the confirmation stage has its own sweep: tests/test_confirm_sweep.py; tta=8:
#  the held-out test, predictions/, the export and retina.predict average all 8 dihedral views)


# `make test-quick` runs `-m "not slow"`: no Ray start, no sweep. A test that uses one of these
# fixtures (each a real sweep) is slow whatever its module says; the tests that start a sweep
# or Ray themselves carry the mark in their module or on their function.
SWEEP_FIXTURES = frozenset({"small_study", "model_dir"})


def pytest_configure(config):
    # Under pytest-xdist the workers share the machine: one compute thread each, for torch here
    # and (OMP_NUM_THREADS) for every sweep and command a test starts. torch's default, a
    # thread per core in every worker, made them spin against each other (measured with 2
    # workers on 2 cores: a training test took 46 s instead of 14).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
    else:
        # Ray's token, made before any worker starts a Ray: the in-process clusters of the
        # cluster tests (ray.cluster_utils) would write their own, racing a sweep's in the other
        # worker on a fresh machine (study.run.ray_token says what that race does).
        make_token(token_file(), log=io.StringIO())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SWEEP_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # Modules with a slow test first, each module's tests kept together (module fixtures are
    # made once): `make test` runs modules in parallel workers, and a long module started
    # last would leave the other worker idle at the end.
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Every test (and every subprocess it starts) builds caches in a temporary folder."""
    folder = tmp_path_factory.mktemp("retina-cache")
    old = os.environ.get("RETINA_CACHE")
    os.environ["RETINA_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("RETINA_CACHE", None)
    else:
        os.environ["RETINA_CACHE"] = old


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """160 synthetic fundus images (80 patients) at 64 px in the Kaggle layout (one set per
    run, read by every xdist worker: nothing writes into it)."""
    from retina.synthetic import generate

    made = made_once(
        tmp_path_factory, "synthetic", lambda f: generate(f / "data", n=160, size=64, seed=0)
    )
    return made / "data"


def _small_sweep(data: Path) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        results = folder / "results"
        home = folder / "home"  # Ray writes its token to $HOME/.ray/auth_token: never the real one
        home.mkdir()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
        }
        # The real sweep, counting the results stores its driver makes (tests/test_sweep.py),
        # logging to MLflow, under umask 000 (tests/test_mlflow_and_token.py).
        proc = run_cli(
            "tests.helpers.count_stores", "search_spaces/demo.yaml", "--data", str(data),
            "--results", str(results), "--name", "small", *SMALL_SWEEP,
            "--mlflow", str(folder / "mlruns"), env={**env, "HOME": str(home)}, umask=0,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (folder / "small-sweep.log").write_text(proc.stdout)  # outside results/

    return run


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, synthetic_data) -> Path:
    """One real 2-trial Ray Tune sweep per test run; returns results/<study> (under xdist, a
    copy per worker: some tests write into it). Beside results/: small-sweep.log (its output),
    mlruns/ (its MLflow store) and home/ (its $HOME)."""
    shared = made_once(tmp_path_factory, "small-sweep", _small_sweep(synthetic_data))
    return own_copy(tmp_path_factory, shared, "small-sweep") / "results" / "small"


@pytest.fixture
def analyze(capsys) -> Callable[..., object]:
    """`python -m study.analyze ARGS` with its main run in this process (tests.helpers.cli.run_here:
    the same exit code and output, without ~2 s of imports per call)."""
    from study.analyze.__main__ import main

    return lambda *args: run_here(main, args, capsys)
