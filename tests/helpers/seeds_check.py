"""The seeds-needed advice against known truth (issue 27): in the calibration check's simulated
world (tests.helpers.simulated_world: 2 x 2 cells, 75 test patients, kappa 0.65, seed sd 0.04),
a first study of 3 seeds per cell advises how many seeds per cell would narrow the
resnet18 pretrained - scratch interval to a target half-width (study.analyze.seeds_needed);
a new study is drawn with that many (and, when the advice says seeds cannot do it, with the
test patients it names), and its interval's half-width is measured. The advice holds when the
median half-width over the repeats is within 15 % of the target.

    python -m tests.helpers.seeds_check --repeats 500     # the full check (docs/growing-seeds.md)
    python -m tests.helpers.seeds_check --repeats 20      # a quick look

The suite runs it small (tests/test_seeds_needed.py).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from study.analyze.comparison import compare_cells
from study.analyze.seeds_needed import NoiseParts, seeds_needed
from tests.helpers.calibration_check import DIMS, WORLDS
from tests.helpers.simulated_world import World

FIRST_SEEDS = 3
PAIR = 0  # resnet18 · pretrained - resnet18 · scratch, the first pair of the 2 x 2 study


def _half_width(world: World, rng, seeds: int, resamples: int, seed: int) -> float:
    trials, preds = world.study(rng, world.cells(WORLDS["null"]), seeds)
    m = compare_cells(trials, preds, DIMS, resamples, seed, "kappa", None)["pairs"][PAIR]
    return (m["metrics"]["kappa"]["ci_high"] - m["metrics"]["kappa"]["ci_low"]) / 2


def advise(world: World, rng, target: float, resamples: int, seed: int) -> dict:
    """The advice of one first study of FIRST_SEEDS seeds per cell, for `target`."""
    trials, preds = world.study(rng, world.cells(WORLDS["null"]), FIRST_SEEDS)
    out = compare_cells(trials, preds, DIMS, resamples, seed, "kappa", None)
    noise, pooled = out["pairs"][PAIR]["test_noise"], out["seed_variance"]["kappa"]
    cells, patients = len(out["cells"]), out["test_patients"]
    net = pooled["runs_sd"] ** 2 - pooled["unshared_test_noise_sd"] ** 2  # as compare_cells
    return seeds_needed(target, net, NoiseParts(**noise), cells, patients, FIRST_SEEDS)


def run(repeats: int, targets=(0.05, 0.1), resamples: int = 400, seed: int = 0) -> dict:
    """{target: median half-width / target, the share advised by patients, ...} over
    `repeats` pairs of studies (first, then new at the advice)."""
    world = World()
    results = {}
    for target in targets:
        widths, seeds, by_patients = [], [], 0
        for r in range(repeats):
            rng = np.random.default_rng([seed, r, int(target * 1000)])
            advice = advise(world, rng, target, resamples, r)
            n, new_world = advice["seeds"], world
            if n is None:  # the test set is too small: the patients it names, and their seeds
                n, by_patients = advice["seeds_with_patients"], by_patients + 1
                new_world = World(n_patients=advice["patients"])
            widths.append(_half_width(new_world, rng, n, resamples, r))
            seeds.append(n)
        widths = np.asarray(widths)
        results[target] = {
            "repeats": repeats,
            "median_half_width": float(np.median(widths)),
            "median_over_target": float(np.median(widths) / target),
            "quartiles_over_target": [float(q) for q in np.percentile(widths, [25, 75]) / target],
            "median_seeds": float(np.median(seeds)),
            "seeds_range": [int(min(seeds)), int(max(seeds))],
            "advised_patients": by_patients,
        }
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.seeds_check")
    parser.add_argument("--repeats", type=int, default=500, help="first studies per target")
    parser.add_argument("--resamples", type=int, default=400, help="bootstrap resamples")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--json", help="also write the numbers to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args.repeats, tuple(args.targets), args.resamples)
    for target, r in results.items():
        print(f"target ±{target:g} kappa: median half-width {r['median_half_width']:.4f} = "
              f"{r['median_over_target']:.3f} x target (quartiles "
              f"{r['quartiles_over_target'][0]:.2f}-{r['quartiles_over_target'][1]:.2f}), "
              f"{r['repeats']} repeats, median {r['median_seeds']:g} seeds per cell "
              f"(range {r['seeds_range'][0]}-{r['seeds_range'][1]}), "
              f"{r['advised_patients']} advised more test patients")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
