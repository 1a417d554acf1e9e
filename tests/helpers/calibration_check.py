"""The comparison's statistics against known truth (issue 19's "Done when"): simulated studies
of 2 x 2 cells (resnet18/resnet50 x pretrained/scratch; tests.helpers.simulated_world: 75 test
patients with correlated eyes, DR grade shares 0.72/0.09/0.15/0.02/0.02, kappa ~0.65, seed sd
0.04 in kappa) go through `compare_cells`, at 2, 3 and 5 seeds per cell, in two worlds:
`null` (every cell kappa 0.65: every pair has no true difference) and `gap` (pretrained 0.65,
scratch 0.55: the two pretrained-vs-scratch pairs differ by ~0.1 kappa, the two arch pairs
not); and `unequal` (every cell kappa 0.65, seed sd 0.02 pretrained and 0.06 scratch: the
pooled seed variance's assumption of one seed sd for the study does not hold). Per world and
number of seeds it reports, over every pair of every repeat:
- `coverage`: the share of 95% difference intervals holding the true difference, overall and
  per subgroup: `both_close` (both cells' runs within a raw sd < 0.02 of each other: studies
  whose runs happen to agree closely), `both_cell_zero` (both cells' own seed-variance
  estimate is 0, the old truncation), `rest`;
- `false_calls`, `false_calls_adjusted`: pairs with no true difference called different, raw
  and Holm-adjusted; `power`, `power_adjusted`: ~0.1-kappa pairs called for the right side;
- `p_coverage`: the share of P(A>B) intervals holding the true P; `p_degenerate`: intervals
  of zero width; `width`: the median width of the difference intervals.

    python -m tests.helpers.calibration_check --repeats 500 --resamples 400   # the full check
    python -m tests.helpers.calibration_check --repeats 20 --resamples 200    # a quick look

Targets: coverage >= 0.93 in every subgroup, false calls <= 0.06, p_coverage >= 0.90.
The suite runs it small (tests/test_analyze_calibration.py).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from study.analyze.comparison import compare_cells
from tests.helpers.simulated_world import World

DIMS = ["arch", "pretrained"]
WORLDS = {
    "null": {("resnet18", True): 0.65, ("resnet18", False): 0.65,
             ("resnet50", True): 0.65, ("resnet50", False): 0.65},
    "gap": {("resnet18", True): 0.65, ("resnet18", False): 0.55,
            ("resnet50", True): 0.65, ("resnet50", False): 0.55},
    # the pooled model's assumption broken: seed sd 0.02 when pretrained, 0.06 from scratch
    "unequal": {("resnet18", True): (0.65, 0.02), ("resnet18", False): (0.65, 0.06),
                ("resnet50", True): (0.65, 0.02), ("resnet50", False): (0.65, 0.06)},
}  # fmt: skip
CLOSE_SD = 0.02  # "runs agree closely": a cell's raw sd of kappa below half the true seed sd


def _label(key: tuple) -> str:
    return f"{key[0]} · {'pretrained' if key[1] else 'scratch'}"


def pair_truths(world: World, kappas: dict, rng: np.random.Generator, draws: int) -> dict:
    """(label A, label B) -> the pair's true difference and P(A>B)."""
    cells = world.cells(kappas)
    by_label = {_label(k): v for k, v in cells.items()}
    out = {}
    for a in by_label:
        for b in by_label:
            if a != b:
                out[a, b] = world.pair_truth(rng, by_label[a], by_label[b], draws)
    return out


def _adjusted(m: dict) -> bool:
    # a comparison without Holm (the code before issue 19) decides on the raw interval
    return bool(m.get("different_adjusted", m["different"]))


def _pair_rows(out: dict, truths: dict) -> list[dict]:
    cells = {c["cell"]: c["metrics"]["kappa"] for c in out["cells"]}
    rows = []
    for p in out["pairs"]:
        m, truth = p["metrics"]["kappa"], truths[p["a"], p["b"]]
        a, b = cells[p["a"]], cells[p["b"]]
        d = truth["difference"]
        real = abs(d) > 0.05
        right = (m["ci_low"] > 0) if d > 0 else (m["ci_high"] < 0)
        rows.append({
            "covered": m["ci_low"] <= d <= m["ci_high"],
            "real": real,
            "called": bool(m["different"]),
            "called_adjusted": _adjusted(m),
            "right_side": bool(right),
            "p_covered": m["p_ci_low"] <= truth["p_a_beats_b"] <= m["p_ci_high"],
            "p_degenerate": m["p_ci_high"] - m["p_ci_low"] < 1e-9,
            "width": m["ci_high"] - m["ci_low"],
            "both_close": max(a["sd"], b["sd"]) < CLOSE_SD,
            "both_cell_zero": a["seed_sd"] == 0 and b["seed_sd"] == 0,
        })  # fmt: skip
    return rows


def _share(rows: list[dict], key: str) -> dict:
    n = len(rows)
    return {"share": float(np.mean([r[key] for r in rows])) if n else None, "n": n}


def summarise(rows: list[dict]) -> dict:
    null = [r for r in rows if not r["real"]]
    real = [r for r in rows if r["real"]]
    rest = [r for r in rows if not r["both_close"] and not r["both_cell_zero"]]
    out = {
        "coverage": _share(rows, "covered"),
        "coverage_both_close": _share([r for r in rows if r["both_close"]], "covered"),
        "coverage_both_cell_zero": _share([r for r in rows if r["both_cell_zero"]], "covered"),
        "coverage_rest": _share(rest, "covered"),
        "false_calls": _share(null, "called"),
        "false_calls_adjusted": _share(null, "called_adjusted"),
        "p_coverage": _share(rows, "p_covered"),
        "p_degenerate": _share(rows, "p_degenerate"),
        "width": float(np.median([r["width"] for r in rows])),
    }
    if real:
        hit = [r | {"hit": r["called"] and r["right_side"]} for r in real]
        hit_adj = [r | {"hit": r["called_adjusted"] and r["right_side"]} for r in real]
        out |= {"power": _share(hit, "hit"), "power_adjusted": _share(hit_adj, "hit")}
    return out


def run(
    repeats: int, resamples: int, seeds=(2, 3, 5), seed: int = 0, truth_draws: int = 40_000,
    worlds=("null", "gap"),
) -> dict:  # fmt: skip
    """{world name: {seeds per cell: summarise(...)}} over `repeats` simulated studies; the
    true difference and P(A>B) of a pair of unequal cells from `truth_draws` simulations."""
    world = World()
    results: dict = {}
    for w, (name, kappas) in enumerate(WORLDS.items()):
        if name not in worlds:
            continue
        truths = pair_truths(world, kappas, np.random.default_rng([seed, w, 99]), truth_draws)
        cells = world.cells(kappas)
        results[name] = {}
        for s in seeds:
            rows = []
            for r in range(repeats):
                rng = np.random.default_rng([seed, w, s, r])
                trials, preds = world.study(rng, cells, s)
                out = compare_cells(trials, preds, DIMS, resamples, r, "kappa", margin=None)
                rows += _pair_rows(out, truths)
            results[name][s] = summarise(rows)
    return results


def _fmt(stat) -> str:
    if isinstance(stat, float):
        return f"{stat:.3f}"
    return "—" if stat["share"] is None else f"{stat['share']:.3f} ({stat['n']})"


def table(results: dict) -> str:
    keys = ["coverage", "coverage_both_close", "coverage_both_cell_zero", "coverage_rest",
            "false_calls", "false_calls_adjusted", "power", "power_adjusted", "p_coverage",
            "p_degenerate", "width"]  # fmt: skip
    lines = []
    for name, by_seeds in results.items():
        lines.append(f"world {name}: share (pairs)")
        lines.append("  " + "key".ljust(24) + "".join(f"{s} seeds".rjust(18) for s in by_seeds))
        for k in keys:
            if all(k in v for v in by_seeds.values()):
                values = "".join(_fmt(v[k]).rjust(18) for v in by_seeds.values())
                lines.append("  " + k.ljust(24) + values)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.calibration_check")
    parser.add_argument("--repeats", type=int, default=500, help="simulated studies per setting")
    parser.add_argument("--resamples", type=int, default=400, help="bootstrap resamples")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--truth-draws", type=int, default=40_000, help="simulations of a truth")
    parser.add_argument("--worlds", nargs="+", choices=list(WORLDS), default=list(WORLDS))
    parser.add_argument("--json", help="also write the numbers to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args.repeats, args.resamples, tuple(args.seeds), truth_draws=args.truth_draws,
                  worlds=tuple(args.worlds))  # fmt: skip
    print(f"{args.repeats} studies per setting, {args.resamples} resamples")
    print(table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
