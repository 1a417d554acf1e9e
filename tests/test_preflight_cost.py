"""The preflight says what a study will cost before it decodes an image, and refuses caches
that will not fit in free disk, with the numbers, writing nothing.

    .venv/bin/pytest tests/test_preflight_cost.py

The refusal runs the real CLI in its own mount namespace on a small tmpfs (root only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from retina.cache_cost import cache_bytes
from study.define.schema import load_study, study_to_dict
from study.record.layout import EPOCHS_FILE, TRIALS_FILE
from study.run.preflight import preflight
from tests.helpers.cli import ROOT, assert_fails

DEMO = ROOT / "search_spaces" / "demo.yaml"
SMALL = ["space.pretrained=false", "data.image_size=32"]


def test_a_cache_is_n_times_3_s_s_bytes():
    # EyePACS (35,126 images) at the three sizes full.yaml searches: ~50 GB of cache
    sizes = {s: cache_bytes(35_126, s) / 1e9 for s in (256, 384, 512)}
    assert [round(v, 1) for v in sizes.values()] == [6.9, 15.5, 27.6]


def test_the_cost_lines_come_before_the_cache_and_say_when_it_is_built(
    synthetic_data, tmp_path, capsys
):
    study = load_study(DEMO, [*SMALL, f"data.path={synthetic_data}"])
    root, results = tmp_path / "cache", tmp_path / "results"
    preflight(study, results / "a", study_to_dict(study), False, root)
    out = capsys.readouterr().out
    n = 160
    assert "images: train " in out and f"({n} in all)" in out
    size_line = f"cache 32 px: {cache_bytes(n, 32) / 1e6:.1f} MB, to build ({root}/"
    assert size_line in out
    assert f"cache disk: {cache_bytes(n, 32) / 1e6:.1f} MB to write, " in out
    assert f"free at {root}" in out
    assert "trials: 8 (each up to 3 epochs; ASHA stops weak ones early)" in out
    assert f"time: no earlier study in {results} to estimate from" in out

    # an earlier study here (its Parquet tables as the sweep writes them) gives a time bound
    earlier = results / "earlier"
    earlier.mkdir(parents=True)
    ids = ["t1", "t2"]
    pd.DataFrame({"trial_id": ids, "arch": "resnet18", "image_size": [64, 64]}).to_parquet(
        earlier / TRIALS_FILE
    )
    pd.DataFrame({"trial_id": ids, "epoch": [1, 1], "train_images_per_s": [40.0, 40.0],
                  "val_images_per_s": [160.0, 160.0]}).to_parquet(earlier / EPOCHS_FILE)  # fmt: skip
    preflight(study, results / "b", study_to_dict(study), False, root)
    out = capsys.readouterr().out
    assert "cache 32 px: " in out and ", built (" in out  # the first preflight built it
    # 32 px is a quarter of 64 px's pixels: 4x the images/s of the earlier study
    split = dict(w.split() for w in out.split("images: ")[1].split(" (")[0].split(", "))
    per_epoch = int(split["train"]) / 160 + int(split["val"]) / 640
    assert f"at ~{per_epoch:.0f} s), scaled from study earlier here (resnet18 at 64 px, 40" in out


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mounting a small tmpfs needs root and unshare",
)


@needs_root
def test_a_cache_that_does_not_fit_is_refused_with_the_numbers(synthetic_data, tmp_path):
    disk, results = tmp_path / "small-disk", tmp_path / "results"
    disk.mkdir()
    # 160 images: 64 px is 2 MB and fits a 100 MB disk, 512 px is 126 MB and does not; both
    # are refused before either is built
    sweep = [sys.executable, "-m", "study.sweep", str(DEMO), "--data", str(synthetic_data),
             "--results", str(results), "--cache-dir", str(disk / "cache"),
             "--set", "space.pretrained=false", "--set", "data.image_size={choice: [64, 512]}"]  # fmt: skip
    # what the small disk holds after the sweep, listed before the namespace (and mount) ends
    script = 'mount -t tmpfs -o size=100m tmpfs "$0" || exit 99; "$@"; rc=$?; ls -A "$0" > "$0.ls"; exit $rc'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(disk), *sweep],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if proc.returncode == 99:
        pytest.skip(f"no tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    need = (cache_bytes(160, 64) + cache_bytes(160, 512)) / 1e6
    assert f"error: the decode-once cache needs {need:.1f} MB (64 px 2.0 MB, 512 px 125.8 MB)" in (
        proc.stderr
    )
    assert f"but {disk / 'cache'} has 104.9 MB free" in proc.stderr
    assert "--cache-dir" in proc.stderr  # the way out
    assert "cache 512 px: 125.8 MB, to build" in proc.stdout  # the cost lines came first
    assert (tmp_path / "small-disk.ls").read_text() == ""  # nothing written on the small disk
    assert not (results / "demo").exists()  # no study folder either


def test_a_trial_bigger_than_the_machine_is_refused_before_anything_is_written(tmp_path):
    # Ray would keep such a trial PENDING forever; the preflight says so before any data is read
    cores, results = len(os.sched_getaffinity(0)), tmp_path / "results"
    sweep = [sys.executable, "-m", "study.sweep", str(DEMO), "--data", str(tmp_path / "none"),
             "--results", str(results), "--set", "space.pretrained=false",
             "--set", f"resources.cpu={cores + 1}"]  # fmt: skip
    result = subprocess.run(sweep, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert_fails(result, f"resources.cpu: a trial asks for {cores + 1} CPUs and this machine has "
                 f"{cores}", f"--set resources.cpu={cores}", "--address")  # fmt: skip
    assert not (results / "demo").exists()
