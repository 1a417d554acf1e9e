"""Shared fixtures: a private decode-once cache, a tiny synthetic data set, one real small sweep."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli

# A sweep small enough for 2 cores: 2 trials of resnet18 at 32 px, scratch (no weights offline).
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
    "data.image_size=32",
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
]  # fmt: skip  (the confirmation stage has its own sweep: tests/test_confirm_sweep.py)


# `make test-quick` runs `-m "not slow"`: no Ray start, no sweep. A test that uses one of these
# fixtures (each a real sweep) is slow whatever its module says; the tests that start a sweep
# or Ray themselves carry the mark in their module or on their function.
SWEEP_FIXTURES = frozenset({"small_study", "model_dir", "mlflow_sweep"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SWEEP_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
    """160 synthetic fundus images (80 patients) at 64 px in the Kaggle layout."""
    from retina.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic") / "data", n=160, size=64, seed=0)


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, synthetic_data) -> Path:
    """One real 2-trial Ray Tune sweep per pytest run; returns results/<study>."""
    results = tmp_path_factory.mktemp("results")
    # The real sweep, counting the results stores its driver makes (tests/test_sweep.py).
    proc = run_cli(
        "tests.helpers.count_stores", "search_spaces/demo.yaml", "--data", str(synthetic_data),
        "--results", str(results), "--name", "small", *SMALL_SWEEP,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (results.parent / "small-sweep.log").write_text(proc.stdout)  # outside results/
    return results / "small"
