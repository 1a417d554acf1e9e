"""python -m retina.bench --quick (and --quick --gpu on the CPU): every key, every number positive.

Speeds are never asserted (they depend on the machine and its load); the tests check that every
benchmark path runs end to end and reports what the issue lists.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from retina.bench.report import CPU_KEYS, gpu_keys
from retina.bench.trials import _epoch_rss_growth

ROOT = Path(__file__).resolve().parents[1]
MACHINE_KEYS = {"cpus", "torch", "device", "device_name", "load_average_start", "quick"}


def run_bench(tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "retina.bench", "--quick", *flags, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "loader" in proc.stdout or "resnet18" in proc.stdout  # the table was printed
    return json.loads(out.read_text())


def assert_positive_numbers(result: dict, keys, nullable: tuple[str, ...] = ()) -> None:
    missing = [k for k in keys if k not in result]
    assert not missing, f"keys missing from the JSON: {missing}"
    for key in keys:
        value = result[key]
        if value is None and key.endswith(nullable):
            continue
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)


@pytest.mark.slow
def test_quick_cpu_benchmark_reports_every_key(tmp_path):
    result = run_bench(tmp_path)
    assert_positive_numbers(result, CPU_KEYS)
    assert MACHINE_KEYS <= set(result["machine"])
    assert result["machine"]["quick"] is True and result["machine"]["cpus"] >= 1
    details = result["details"]
    assert {"loaders", "training", "trials", "predict"} <= set(details)
    assert details["predict"]["decode_workers"] == 2  # predict_efficiency's setting
    trials = details["trials"]
    assert trials["reuse_actors"] is True  # the sweep's TuneConfig reuses trial workers
    assert trials["images"]["large"] == 8 * trials["images"]["base"]
    assert trials["loader_epoch_rss"]["cache_mb"] > 0
    # Ratios are medians of per-round ratios: each round's runs are in the details.
    runs = details["training"]["runs"]
    assert len(runs["bare"]) == len(runs["ours"]) == result["sizes"]["repeats"]
    ratios = sorted(o / b for o, b in zip(runs["ours"], runs["bare"], strict=True))
    assert result["epoch_efficiency"] == pytest.approx(ratios[len(ratios) // 2])


@pytest.mark.slow
def test_quick_gpu_benchmark_runs_on_the_cpu(tmp_path):
    result = run_bench(tmp_path, "--gpu")
    keys = gpu_keys(("resnet18", "resnet50"), 4)
    assert_positive_numbers(result, keys, nullable=("gpu_utilization",))
    if not torch.cuda.is_available():
        assert all(result[k] is None for k in keys if k.endswith("gpu_utilization"))
        assert result["machine"]["device"] == "cpu"
    groups = result["details"]["groups"]
    assert len(groups["4_processes"]["resnet18"]["per_process"]) == 4  # four sharing processes


def test_gpu_benchmark_without_a_gpu_asks_for_quick(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, "-m", "retina.bench", "--gpu", "--json", str(tmp_path / "x.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--quick" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_an_epoch_read_through_positioned_reads_leaves_rss_flat(tmp_path):
    # 1,500 images at 64 px: an 18 MB cache. Through the map, one epoch leaves its pages
    # resident; the loader's positioned reads leave none.
    path = tmp_path / "images.npy"
    images = np.lib.format.open_memmap(path, "w+", np.uint8, (1500, 3, 64, 64))
    images[:] = 7
    images.flush()
    del images
    mapped = _epoch_rss_growth(str(path), True, 16)
    read = _epoch_rss_growth(str(path), False, 16)
    assert mapped > 10 * 2**20
    assert read < 4 * 2**20
