"""The calibration check of known truth (tests.helpers.calibration_check), run small: a few
simulated studies per setting and few resamples, with loose bounds. The full run (500
studies per setting, 400 resamples: `python -m tests.helpers.calibration_check`) is what
the numbers in docs/results.md come from."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.calibration_check import main, run
from tests.helpers.simulated_world import World


def test_the_simulated_world_has_the_asked_kappa_and_seed_sd():
    world = World()
    for target in (0.65, 0.55):
        cell = world.cell(target)
        assert cell.kappa == pytest.approx(target, abs=1e-6)
        assert cell.seed_sd == pytest.approx(0.04, abs=1e-6)
    true, shared = world.eyes(np.random.default_rng(0))
    assert true.shape == shared.shape == (1, 150)  # 75 patients, both eyes
    truth = world.pair_truth(np.random.default_rng(0), world.cell(0.65), world.cell(0.55), 4000)
    assert 0.07 < truth["difference"] < 0.13 and 0.75 < truth["p_a_beats_b"] < 0.95
    assert world.pair_truth(None, world.cell(0.65), world.cell(0.65)) == {
        "difference": 0.0, "p_a_beats_b": 0.5,
    }  # fmt: skip


def test_a_small_calibration_run_is_roughly_calibrated():
    results = run(repeats=12, resamples=200, seeds=(2, 3), truth_draws=4000)
    for world in ("null", "gap"):
        for seeds in (2, 3):
            stats = results[world][seeds]
            assert stats["coverage"]["n"] == 48  # 12 studies x 4 pairs
            assert stats["coverage"]["share"] >= 0.85
            assert stats["p_coverage"]["share"] >= 0.8
            assert stats["false_calls_adjusted"]["share"] <= 0.15
            assert stats["p_degenerate"]["share"] == 0
    assert "power_adjusted" in results["gap"][3] and "power" not in results["null"][3]


def test_the_command_prints_the_table(capsys, tmp_path):
    out = tmp_path / "calibration.json"
    args = ["--repeats", "2", "--resamples", "100", "--seeds", "2", "--truth-draws", "1000"]
    assert main([*args, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "world null" in text and "coverage_both_close" in text and out.exists()
