"""How many seeds an undecided pair would need (study.analyze.seeds_needed): the noise parts
by hand, the half-width falling to the test set's floor, the patients advised when seeds
cannot do it, the advice in summary.json's pairs and sentences, and the check in the simulated
world run small (the full one: `python -m tests.helpers.seeds_check --repeats 500`)."""

from __future__ import annotations

import numpy as np
import pytest

from study.analyze.comparison import compare_cells
from study.analyze.seeds_needed import (
    NoiseParts,
    advice_text,
    half_width,
    noise_parts,
    seeds_needed,
)
from tests.helpers.calibration_check import DIMS, WORLDS
from tests.helpers.seeds_check import run
from tests.helpers.simulated_world import World


def test_noise_parts_split_what_the_runs_share_from_what_each_run_adds():
    # run = cell's part (shared by its runs) + own noise; A and B share a common part too
    rng = np.random.default_rng(0)
    n = 200_000
    common, cell_a, cell_b = rng.normal(0, [[0.05], [0.02], [0.03]], (3, n))
    boot_a = (common + cell_a)[:, None] + rng.normal(0, 0.04, (n, 3))
    boot_b = (common + cell_b)[:, None] + rng.normal(0, 0.06, (n, 4))
    parts = noise_parts(boot_a, boot_b)
    # the common part cancels in A - B; each cell's own part does not; own noise averages out
    assert parts.shared == pytest.approx(0.02**2 + 0.03**2, rel=0.05)
    assert parts.unshared == pytest.approx(0.04**2 + 0.06**2, rel=0.05)
    assert noise_parts(boot_a[:, :1], boot_b) is None  # one run: nothing to read


def test_the_half_width_falls_with_seeds_to_the_test_sets_floor():
    parts = NoiseParts(shared=0.0004, unshared=0.004)
    widths = half_width(np.array([2, 3, 5, 10, 100, 1000]), 0.0016, parts, 4)
    assert (np.diff(widths) < 0).all()
    assert widths[-1] == pytest.approx(1.96 * np.sqrt(0.0004), rel=0.08)
    # fewer patients' noise (scale < 1) narrows it
    assert half_width([10], 0.0016, parts, 4, scale=0.5)[0] < widths[3]


def test_seeds_reach_a_wide_target_and_patients_a_narrow_one():
    parts = NoiseParts(shared=0.0004, unshared=0.004)
    wide = seeds_needed(0.05, 0.0016, parts, 4, 75, 3)
    assert 3 < wide["seeds"] < 100 and wide["patients"] is None
    assert half_width([wide["seeds"]], 0.0016, parts, 4)[0] <= 0.05
    assert half_width([wide["seeds"] - 1], 0.0016, parts, 4)[0] > 0.05  # the fewest
    assert "seeds per cell (now 3; --more-seeds" in advice_text(wide, "kappa")
    narrow = seeds_needed(0.03, 0.0016, parts, 4, 75, 3)  # floor 1.96 x 0.02 = 0.039 > 0.03
    assert narrow["seeds"] is None and narrow["test_floor"] > 0.03
    scale = 75 / narrow["patients"]
    assert narrow["patients"] > 75
    assert half_width([narrow["seeds_with_patients"]], 0.0016, parts, 4, scale)[0] <= 0.03
    text = advice_text(narrow, "kappa")
    assert text.startswith("seeds cannot decide it: the test set's own noise alone leaves ±0.04")
    assert f"about {narrow['patients']} test patients" in text
    assert seeds_needed(0.05, float("nan"), parts, 4, 75, 1) is None  # no seed variance
    # seeds that spread widely on a quiet test set: neither seeds up to 1000 nor more patients
    wild = seeds_needed(0.05, 1.0, NoiseParts(shared=0.0001, unshared=0.004), 4, 75, 3)
    assert wild["seeds"] is None and wild["patients"] is None
    assert advice_text(wild, "kappa") == (
        "more than 1000 seeds per cell would be needed to reach ±0.05 kappa"
    )


def test_an_undecided_pair_says_how_many_seeds_a_decided_one_does_not():
    world = World()
    gap = world.cells(WORLDS["gap"])
    trials, preds = world.study(np.random.default_rng(3), gap, 3)
    out = compare_cells(trials, preds, DIMS, 300, seed=0, margin=0.05)
    for pair in out["pairs"]:
        decided = pair["metrics"]["kappa"]["different_adjusted"]
        assert pair["test_noise"] is not None
        if decided:
            assert pair["seeds_needed"] is None and "seeds per cell" not in pair["sentence"]
        else:
            advice = pair["seeds_needed"]
            target = max(abs(pair["metrics"]["kappa"]["difference"]), 0.05)
            assert advice["target"] == pytest.approx(target)
            assert advice_text(advice, "kappa") in pair["sentence"]
    assert any(p["seeds_needed"] for p in out["pairs"])
    none = compare_cells(trials, preds, DIMS, 300, seed=0, margin=None)
    assert all(p["seeds_needed"] is None for p in none["pairs"])


def test_the_advice_holds_in_the_simulated_world_run_small():
    # 12 first studies of 3 seeds, each followed by a new study at its advice; the full check
    # (500 repeats) holds the median to within 15 % of the target, this one loosely
    result = run(repeats=12, targets=(0.1,), resamples=200)[0.1]
    assert 0.7 <= result["median_over_target"] <= 1.3
    assert result["seeds_range"][0] >= 2
