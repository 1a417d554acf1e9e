"""The comparison's statistics on simulated predictions of known truth (confirm_fixtures):
the 95% interval of a difference is calibrated, a large gap is called, no gap is not; the
pooled seed variance keeps a cell whose runs agree exactly from losing its seed part; P(A>B),
Holm's adjustment and the sentences by hand; tuning curves and optimism on hand values.

The simulations are small (80 patients, 3 seeds per cell) and use 400 resamples: a 95%
percentile interval then rests on the 10 resamples in each tail, enough for a coverage check
over many repeats (the CLI's default is 10,000)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from study.analyze.comparison import Cell, compare_cells, p_beats, sentence
from study.analyze.inference import (
    SeedVariance,
    holm,
    p_beats_model,
    p_value,
    p_verdict,
    pair_draws,
)
from study.analyze.section_comparison import pair_table, seeds_text
from study.analyze.tuning import (
    leading_trials,
    needed_trials,
    optimism,
    tuning_curve,
    tuning_summary,
)
from tests.helpers.confirm_fixtures import simulate_test

DIMS = ["arch", "pretrained"]
RESAMPLES = 400


def _repeats(gap: float, spread: float, repeats: int, patients: int = 80):
    """For each seeded repeat: the pretrained-scratch accuracy pair and the pretrained cell."""
    truth = {("resnet18", True): 0.6 + gap, ("resnet18", False): 0.6}
    for r in range(repeats):
        trials, preds = simulate_test(np.random.default_rng(r), truth, 3, patients, spread)
        # margin None: no seeds advice, which these coverage checks do not read (~8 s saved)
        out = compare_cells(trials, preds, DIMS, RESAMPLES, seed=r, primary="acc", margin=None)
        yield out["pairs"][0], out["cells"][0]


def test_the_interval_covers_the_true_difference_in_at_least_90_percent_of_200_repeats():
    # seeds and test patients both matter here: a seed moves a run's accuracy by up to 0.05
    # (sd 0.029), the test sample (160 eyes of 80 patients) by ~0.035
    covered, cell_covered = 0, 0
    for pair, cell in _repeats(gap=0.1, spread=0.05, repeats=200):
        m = pair["metrics"]["acc"]
        covered += m["ci_low"] <= 0.1 <= m["ci_high"]
        c = cell["metrics"]["acc"]
        cell_covered += c["ci_low"] <= 0.7 <= c["ci_high"]
        assert pair["a"] == "resnet18 · pretrained" and pair["dimension"] == "pretrained"
    print(f"\ncoverage of the difference {covered / 200:.3f}, of a cell {cell_covered / 200:.3f}")
    assert covered / 200 >= 0.90
    assert cell_covered / 200 >= 0.90


def test_no_true_gap_is_rarely_called_a_difference():
    called = [pair["metrics"]["acc"]["different"] for pair, _ in _repeats(0.0, 0.05, 100)]
    assert sum(called) / len(called) <= 0.10
    pair, _ = next(_repeats(0.0, 0.05, 1))
    if not pair["metrics"]["acc"]["different"]:
        assert pair["sentence"].startswith("no difference detectable with these runs (")


def test_a_large_true_gap_is_called_for_the_right_side():
    for pair, _ in _repeats(gap=0.3, spread=0.03, repeats=20):
        m = pair["metrics"]["acc"]
        assert m["different"] and m["ci_low"] > 0
        assert pair["sentence"].startswith("pretrained beats scratch for resnet18 by ")
        assert m["runs_share_a_beats_b"] == 1.0  # every run of A beats every run of B
        assert m["p_a_beats_b"] > 0.99 and m["p_ci_low"] >= 0.75
        assert m["p_verdict"] == "meaningful_a" and m["different_adjusted"]
        assert pair["sentence"].endswith(": a meaningful gain for pretrained")


def _copy_first_run(trials, preds, cell_prefix):
    """Every run of the cell gets the predictions of its first run: runs that agree exactly."""
    ids = sorted(t for t in trials["trial_id"] if t.startswith(cell_prefix))
    first = preds[preds["trial_id"] == ids[0]]
    rest = preds[~preds["trial_id"].isin(ids)]
    return pd.concat([rest] + [first.assign(trial_id=t) for t in ids], ignore_index=True)


def test_the_pair_is_paired_on_patients_the_shared_test_sample_cancels():
    # no seed spread (every run of a cell predicts the same), and the two cells predict the
    # very same thing: only the test sample varies, and it is shared, so the difference is
    # exactly 0 in every resample
    trials, preds = simulate_test(np.random.default_rng(0), {("r18", True): 0.7}, 3, 50, 0.0)
    preds = _copy_first_run(trials, preds, "c_r18_p_")
    twin = trials.assign(pretrained=False, trial_id=trials["trial_id"] + "_twin")
    twin_preds = preds.assign(trial_id=preds["trial_id"] + "_twin")
    both = compare_cells(pd.concat([trials, twin]), pd.concat([preds, twin_preds]), DIMS, 200)
    m = both["pairs"][0]["metrics"]["kappa"]
    assert m["difference"] == 0 and m["ci_low"] == 0 and m["ci_high"] == 0
    assert m["p_a_beats_b"] == 0.5 and not m["different"] and m["p_value"] == 1.0
    assert both["seed_variance"]["kappa"]["pooled_sd"] == 0  # identical runs: no seed spread


def test_a_cell_whose_runs_agree_exactly_keeps_the_pooled_seed_variation():
    truth = {("resnet18", True): 0.7, ("resnet18", False): 0.7}
    trials, preds = simulate_test(np.random.default_rng(3), truth, 3, 80, 0.1)
    one_agrees = _copy_first_run(trials, preds, "c_resnet18_p_")
    both_agree = _copy_first_run(trials, one_agrees, "c_resnet18_s_")
    pooled = compare_cells(trials, one_agrees, DIMS, RESAMPLES, primary="acc")
    none = compare_cells(trials, both_agree, DIMS, RESAMPLES, primary="acc")
    cell, bare = pooled["cells"][0]["metrics"]["acc"], none["cells"][0]["metrics"]["acc"]
    assert cell["sd"] == 0 and cell["seed_sd"] == 0  # its own estimate: exactly 0
    seeds = pooled["seed_variance"]["acc"]
    assert seeds["pooled_sd"] > 0 and seeds["dof"] == 4  # (3 - 1) + (3 - 1)
    # the pooled seed part widens the interval of the cell whose runs agree
    assert cell["ci_high"] - cell["ci_low"] > 1.2 * (bare["ci_high"] - bare["ci_low"])
    assert pooled["pairs"][0]["seed_variation_included"]


def test_p_a_beats_b_is_never_degenerate_with_two_runs_per_cell():
    truth = {("resnet18", True): 0.8, ("resnet18", False): 0.6}
    trials, preds = simulate_test(np.random.default_rng(1), truth, 2, 80, 0.05)
    m = compare_cells(trials, preds, DIMS, RESAMPLES, primary="acc")["pairs"][0]["metrics"]["acc"]
    assert m["runs_share_a_beats_b"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # what 2 x 2 runs allow
    assert 0.5 < m["p_a_beats_b"] < 1 and m["p_ci_high"] - m["p_ci_low"] > 0.01
    assert m["p_ci_low"] <= m["p_a_beats_b"] <= m["p_ci_high"]


def test_p_a_beats_b_from_the_model_by_hand():
    # difference 0.1, seed variance 0.04^2, test noise of run minus run 0.05^2:
    # Phi(0.1 / sqrt(2 * 0.0016 + 0.0025)) = Phi(1.3245) = 0.9073
    assert p_beats_model(0.1, 0.0016, 0.0025) == pytest.approx(0.9073, abs=1e-4)
    assert p_beats_model(np.array([0.0, 0.1, -0.1]), 0.0, 0.0).tolist() == [0.5, 1.0, 0.0]
    assert p_verdict(0.8, 0.99, (3, 3), 4) == "meaningful_a"
    assert p_verdict(0.01, 0.2, (3, 3), 4) == "meaningful_b"
    assert p_verdict(0.3, 0.7, (3, 3), 4) == "not_meaningful"
    assert p_verdict(0.6, 0.99, (3, 3), 4) == "undecided"
    assert p_verdict(0.8, 0.99, (1, 3), 2) == "too_few_runs"


def test_holm_on_a_hand_made_family():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; kept
    # monotone: 0.02, 0.03, 0.06, 0.06; back in the family's order
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert (adjusted < 0.05).tolist() == [True, False, False, True]  # raw: all four < 0.05
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # a family of one is not adjusted
    draws = np.array([-0.1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert p_value(draws) == pytest.approx(0.2)  # 2 x the 1 in 10 draws at or below 0


def test_p_a_beats_b_by_hand():
    # A (0.8, 0.7, 0.9) vs B (0.75, 0.85): A wins 0.8>0.75, 0.9>0.75, 0.9>0.85: 3 of 6
    assert p_beats(np.array([0.8, 0.7, 0.9]), np.array([0.75, 0.85])) == 0.5
    assert p_beats(np.array([0.8]), np.array([0.8])) == 0.5  # a tie counts half
    assert p_beats(np.array([[0.9, 0.1], [0.1, 0.1]]), np.array([[0.5], [0.5]])).tolist() == [
        0.5,
        0.0,
    ]


def _stats(d, lo, hi, adjusted=None, family=1, verdict="undecided"):
    different = lo > 0 or hi < 0
    return {
        "difference": d, "ci_low": lo, "ci_high": hi, "different": different,
        "different_adjusted": different if adjusted is None else adjusted,
        "p_value": 0.01 if different else 0.4, "p_value_adjusted": 0.04 if different else 0.8,
        "family": family, "p_a_beats_b": 0.8, "p_ci_low": 0.6, "p_ci_high": 0.95,
        "p_verdict": verdict,
    }  # fmt: skip


def test_sentences():
    a = Cell(("resnet18", "pretrained"), "resnet18 · pretrained", ["a"], [0])
    b = Cell(("resnet18", "scratch"), "resnet18 · scratch", ["b"], [0])
    say = sentence(a, b, 1, _stats(0.12, 0.05, 0.19), "kappa", True)
    assert say == (
        "pretrained beats scratch for resnet18 by 0.12 kappa [0.05, 0.19], p = 0.040; "
        "P(pretrained > scratch) = 0.80 [0.60, 0.95]: too uncertain to call a gain meaningful"
    )
    say = sentence(a, b, 1, _stats(-0.12, -0.19, -0.05, family=4), "kappa", True)
    assert say.startswith(
        "scratch beats pretrained for resnet18 by 0.12 kappa [0.05, 0.19], p = 0.040 (Holm, 4 pairs)"
    )
    say = sentence(a, b, 1, _stats(0.02, -0.05, 0.09), "acc", True)
    assert say.startswith("no difference detectable with these runs")
    assert "pretrained − scratch for resnet18: 0.02 accuracy [-0.05, 0.09], p = 0.400)" in say
    # the raw interval excludes 0 but Holm over the family does not uphold it
    raw_only = _stats(0.12, 0.05, 0.19, adjusted=False, family=9)
    say = sentence(a, b, 1, raw_only, "kappa", True)
    assert say.startswith("no difference detectable after adjusting for the study's 9 pairs (")
    assert "p = 0.010, Holm-adjusted = 0.040)" in say
    few = sentence(a, b, 1, _stats(0.02, -0.05, 0.09, verdict="too_few_runs"), "kappa", False)
    assert "seed-to-seed variation is not in the interval" in few
    assert few.endswith(": too few runs to tell whether a gain is meaningful")
    meaningful = sentence(a, b, 1, _stats(0.12, 0.05, 0.19, verdict="meaningful_a"), "kappa", True)
    assert meaningful.endswith(": a meaningful gain for pretrained")


def test_the_pair_table_says_its_decision_in_the_sentences_words():
    pairs = [
        {"a": "pretrained", "b": "scratch", "dimension": "pretrained", "metrics": {"kappa": s}}
        for s in (_stats(0.02, -0.05, 0.09), _stats(-0.12, -0.19, -0.05),
                  _stats(0.12, 0.05, 0.19, adjusted=False, family=9))
    ]  # fmt: skip
    column = pair_table(pairs, ["kappa"])["p kappa: decision"].tolist()
    assert column == [
        "0.400 (Holm 0.800): no difference detectable",
        "0.010 (Holm 0.040): B better",
        "0.010 (Holm 0.040): no difference detectable after Holm (A better before adjusting)",
    ]
    assert not any("not shown" in text for text in column)


def test_the_cell_table_says_when_each_seed_was_added():
    batches = [
        {"seeds": [1000, 1001, 1002], "at": "2026-12-08T03:10:00+00:00", "cells": None},
        {"seeds": [1003, 1004], "at": "2026-12-08T03:40:05+00:00", "cells": ["head=classify"]},
    ]
    assert seeds_text([1000, 1001, 1002, 1003, 1004], batches) == (
        "1000, 1001, 1002 (with the study, 2026-12-08 03:10 UTC); "
        "1003, 1004 (added, 2026-12-08 03:40 UTC)"
    )
    assert seeds_text([1000, 1001, 1002], batches).endswith(
        "(with the study, 2026-12-08 03:10 UTC)"
    )
    assert seeds_text([0, 1], []) == "0, 1"  # a study from before the batches: the seeds alone


def test_one_run_per_cell_says_the_seed_variation_is_missing():
    truth = {("resnet18", True): 0.8, ("resnet18", False): 0.6}
    trials, preds = simulate_test(np.random.default_rng(0), truth, 1, 60, 0.0)
    pair = compare_cells(trials, preds, DIMS, 200)["pairs"][0]
    assert pair["seed_variation_included"] is False
    assert "seed-to-seed variation is not in the interval" in pair["sentence"]
    assert pair["metrics"]["kappa"]["p_verdict"] == "too_few_runs"
    assert "too few runs to tell" in pair["sentence"]


def test_tuning_curve_is_the_unbiased_expected_best():
    # 3 trials 0.1, 0.3, 0.2: best of 1 = mean 0.2; of 2 = mean of (0.3, 0.2, 0.3); of 3 = 0.3
    curve = tuning_curve(np.array([0.1, 0.3, 0.2]), "best_val_kappa", "max", band=True)
    assert np.allclose(curve["expected_best"], [0.2, 0.8 / 3, 0.3])
    assert all(lo <= hi for lo, hi in zip(curve["band_low"], curve["band_high"], strict=True))
    low = tuning_curve(np.array([0.1, 0.3, 0.2]), "best_val_loss", "min", band=False)
    assert np.allclose(low["expected_best"], [0.2, 0.4 / 3, 0.1])
    assert needed_trials([0.2, 0.8 / 3, 0.3]) == (3, pytest.approx(0.3 - 0.8 / 3))
    assert needed_trials([0.5, 0.595, 0.6, 0.6])[0] == 2


def _trials(rows) -> pd.DataFrame:
    cols = ["trial_id", "status", "stage", "arch", "pretrained", "best_val_kappa", "test_kappa"]
    return pd.DataFrame(rows, columns=cols).assign(best_val_loss=0.5)


def test_tuning_summary_uses_the_search_stage_per_cell():
    trials = _trials(
        [(f"s{i}", "TERMINATED", "search", "r18", i % 2 == 0, 0.1 * i, np.nan) for i in range(8)]
        + [("c0", "TERMINATED", "confirm", "r18", True, 0.99, 0.9)]
    )
    out = tuning_summary(trials, "best_val_kappa", "max", DIMS)
    assert out["trials"] == 8 and out["study"]["expected_best"][-1] == pytest.approx(0.7)
    assert sorted(out["cells"]) == ["r18 · pretrained", "r18 · scratch"]
    assert out["cells"]["r18 · scratch"]["expected_best"][-1] == pytest.approx(0.7)
    assert "8 finished search trials" in out["sentence"]
    assert "still rising" in out["sentence"]  # 4 -> 8 trials raised the best from 0.55 to 0.7
    assert out["rests_on"] == 0 and "rests on" not in out["sentence"]


def test_the_tuning_sentence_says_when_one_lucky_trial_carries_the_curve():
    # issue 19: 7 of 8 trials at kappa <= 0.03, one at 0.5: "still rising" describes one trial
    lucky = [0.0, 0.01, 0.03, 0.0, 0.02, 0.5, 0.0, 0.01]
    trials = _trials([(f"s{i}", "TERMINATED", "search", "r18", True, v, np.nan)
                      for i, v in enumerate(lucky)])  # fmt: skip
    out = tuning_summary(trials, "best_val_kappa", "max", DIMS, seed_sd=0.04)
    assert out["rests_on"] == 1
    assert (
        "It rests on one trial: val kappa 0.500 against at most 0.030 for the other 7"
        in (out["sentence"])
    )
    assert "varies by 0.040 (sd, net of test-sample noise)" in out["sentence"]
    assert leading_trials(np.array([0.6, 0.58, 0.05, 0.0, 0.02, 0.01]), "max") == 2
    assert leading_trials(np.array([0.6, 0.55, 0.52, 0.5, 0.45, 0.4, 0.35]), "max") == 0
    assert leading_trials(np.array([0.2, 0.9, 0.95, 0.92, 0.91]), "min") == 1  # a loss
    assert leading_trials(np.array([0.5, 0.0, 0.0]), "max") == 0  # too few others to tell


def test_optimism_sets_the_winners_test_value_beside_its_val_value():
    trials = _trials(
        [
            ("s0", "TERMINATED", "search", "r18", True, 0.80, 0.70),
            ("s1", "TERMINATED", "search", "r18", False, 0.60, np.nan),
            ("c0", "TERMINATED", "confirm", "r18", True, 0.95, 0.75),  # not a search trial
        ]
    )
    cell = {"cell": "r18 · pretrained", "mean": 0.72, "sd": 0.03, "n_runs": 3}
    out = optimism(trials, "best_val_kappa", "max", cell)
    assert out["trial_id"] == "s0" and out["gap"] == pytest.approx(0.1)
    assert "val kappa 0.800" in out["sentence"] and "0.700, 0.100 worse" in out["sentence"]
    assert "0.720 ± 0.030" in out["sentence"]
    untested = optimism(trials.assign(test_kappa=np.nan), "best_val_kappa", "max")
    assert untested["gap"] is None and "not tested" in untested["sentence"]


def test_intervals_stay_within_what_the_metric_can_be():
    # 2 seeds of wildly different quality: t_1 tails would put the mean past accuracy 0 and 1
    truth = {("resnet18", True): 0.5, ("resnet18", False): 0.5}
    trials, preds = simulate_test(np.random.default_rng(0), truth, 2, 40, 0.35)
    out = compare_cells(trials, preds, DIMS, 400, primary="acc")
    for cell in out["cells"]:
        for m, (lo, hi) in {"acc": (0, 1), "balanced_acc": (0, 1), "kappa": (-1, 1)}.items():
            stats = cell["metrics"][m]
            assert lo <= stats["ci_low"] <= stats["ci_high"] <= hi
    assert -1 <= out["pairs"][0]["metrics"]["acc"]["ci_low"] <= 0


def test_tied_trials_draw_a_curve_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curve = tuning_curve(np.array([0.0, 0.0, 0.0, 0.2]), "best_val_kappa", "max", band=True)
    assert curve["expected_best"][-1] == 0.2 and curve["expected_best"][0] == 0.05


def test_a_pair_takes_the_larger_of_the_study_pool_and_the_other_cells_pool_draw_by_draw():
    u = np.linspace(0.01, 0.99, 99)
    study = SeedVariance(spread=0.002, unshared_noise=0.001, dof=8)  # pulled down by the pair
    others = SeedVariance(spread=0.003, unshared_noise=0.001, dof=4)  # the cells outside it
    draws = pair_draws(study, others, u)
    assert np.all(draws >= study.draws(u)) and np.all(draws >= others.draws(u))
    assert np.all(np.diff(draws) <= 0)  # one u: the draws move together (large u, small chi2^-1)
    no_others = SeedVariance(float("nan"), 0.0, 0)  # a study of two cells
    assert np.array_equal(pair_draws(study, no_others, u), study.draws(u))
    assert study.seed == pytest.approx(0.001) and np.all(no_others.draws(u) == 0)
