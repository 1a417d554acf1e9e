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

from retina.bench.report import BUSY, CPU_KEYS, CPU_TARGETS, check_targets, gpu_keys, table
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
    assert any(key in proc.stdout for key in ("loader", "resnet18", "augment_"))  # the table
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
    # An overhead is a difference of two timings: on a busy machine it may come out below 0.
    assert_positive_numbers(result, [k for k in CPU_KEYS if k != "augment_overhead_512"])
    assert math.isfinite(result["augment_overhead_512"])
    assert MACHINE_KEYS <= set(result["machine"])
    assert result["machine"]["quick"] is True and result["machine"]["cpus"] >= 1
    details = result["details"]
    assert {"loaders", "training", "trials", "predict"} <= set(details)
    assert details["predict"]["decode_workers"] == 2  # predict_efficiency's setting
    trials = details["trials"]
    assert trials["reuse_actors"] is True  # the sweep's TuneConfig reuses trial workers
    assert trials["images"]["large"] == 8 * trials["images"]["base"]
    assert trials["loader_epoch_rss"]["cache_mb"] > 0
    # The demo study's clean-up kept the tested trial (test_top_k 1) of the two.
    assert trials["checkpoints"]["trials_with_checkpoints"] == [2, 1]
    assert result["checkpoint_bytes_after_study"] < result["checkpoint_bytes_before_cleanup"]
    large = details["loaders"]["loader_512_large"]
    assert large["source"].endswith("x".join(map(str, result["sizes"]["large_source"])))
    assert set(details["capacity"]) == {"loaders", "training", "cache_build", "predict", "trials", "augment"}  # fmt: skip
    # Ratios are medians of per-round ratios: each round's runs are in the details.
    runs = details["training"]["runs"]
    assert len(runs["bare"]) == len(runs["ours"]) == result["sizes"]["repeats"]
    ratios = sorted(o / b for o, b in zip(runs["ours"], runs["bare"], strict=True))
    assert result["epoch_efficiency"] == pytest.approx(ratios[len(ratios) // 2])


def test_augment_section_runs_alone_and_reports_its_share(tmp_path):
    result = run_bench(tmp_path, "--only", "augment")
    keys = ["augment_flips_images_per_s_512", "augment_fundus_images_per_s_512",
            "augment_alone_share_512"]  # fmt: skip
    assert_positive_numbers(result, keys)
    assert math.isfinite(result["augment_overhead_512"]) and "loader_speedup_128" not in result
    details = result["details"]["augment"]
    runs = details["runs"]  # the overhead is the median of each round's time ratio
    ratios = sorted(f / g - 1 for f, g in zip(runs["flips"], runs["fundus"], strict=True))
    assert result["augment_overhead_512"] == pytest.approx(ratios[len(ratios) // 2])
    assert details["augment_alone_seconds_per_epoch"] > 0


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


def test_ratios_measured_on_a_busy_machine_are_not_compared(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    results = {"loader_speedup_128": 80.0, "loader_speedup_512": 5.0, "trial_peak_rss_ratio": 1.0}
    results |= {"cache_build_images_per_s_1core": 100.0, "cache_build_images_per_s_all": 190.0}
    capacity = {"loaders": [1.9, 1.2], "cache_build": [1.9, 1.95], "trials": [1.1, 1.0]}
    checks = check_targets(results, CPU_TARGETS, capacity)
    assert not checks["loader_speedup_128"]["comparable"]  # 1.2 cores at the loaders' end
    assert not checks["loader_speedup_512"]["comparable"]
    assert checks["cache_build_scaling"]["comparable"] and checks["cache_build_scaling"]["met"]
    assert checks["trial_peak_rss_ratio"]["comparable"]  # memory: load does not move it
    printed = table(results, CPU_KEYS, checks)
    line = next(x for x in printed.splitlines() if x.startswith("loader_speedup_512 "))
    assert line.endswith(BUSY) and "MISSED" not in line
    assert next(x for x in printed.splitlines() if x.startswith("(cache")).endswith("met")
    quiet = check_targets(results, CPU_TARGETS, {"run": [1.9, 1.8]})
    assert quiet["loader_speedup_512"] == {
        "target": ">= 8", "value": 5.0, "met": False, "comparable": True, "capacity": 1.8
    }  # fmt: skip
