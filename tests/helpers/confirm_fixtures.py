"""Per-image predictions of known truth, and a study with a confirm stage built by hand.

    from tests.helpers.confirm_fixtures import simulate_test, add_confirm

The simulated world: each patient has two eyes with grades drawn from GRADE_SHARES and a
difficulty d in {-0.15, 0, +0.15} (shared by both eyes: eyes of a patient are correlated).
A run of a cell with accuracy `acc` gets a seed effect u ~ Uniform(-spread, spread), and each
eye is right with probability acc + u + d, else off by one grade. E[u] = E[d] = 0, so the
expected test accuracy of a run of that cell, over seeds and patients, is exactly `acc`: the
true difference of two cells is the difference of their `acc`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers.analyze_fixtures import write_parquet

GRADE_SHARES = [0.6, 0.12, 0.15, 0.08, 0.05]
DIFFICULTY = (-0.15, 0.0, 0.15)


def patients(rng: np.random.Generator, n_patients: int) -> pd.DataFrame:
    """Two eyes per patient: image, patient, true grade and the patient's difficulty."""
    ids = np.repeat(np.arange(n_patients), 2)
    return pd.DataFrame(
        {
            "image": [f"{p}_{side}" for p in range(n_patients) for side in ("left", "right")],
            "patient": [f"{p}" for p in ids],
            "true": rng.choice(5, size=2 * n_patients, p=GRADE_SHARES),
            "difficulty": rng.choice(DIFFICULTY, size=n_patients)[ids],
        }
    )


def run_predictions(
    rng: np.random.Generator, eyes: pd.DataFrame, trial_id: str, acc: float, spread: float,
    split: str = "test",
) -> pd.DataFrame:  # fmt: skip
    """One run's prediction rows (the predictions/ contract) on `eyes`."""
    p = acc + rng.uniform(-spread, spread) + eyes["difficulty"].to_numpy()
    right = rng.random(len(eyes)) < p
    true = eyes["true"].to_numpy()
    wrong = np.where(true < 4, true + 1, 3)
    pred = np.where(right, true, wrong)
    probs = np.full((len(eyes), 5), 0.05, dtype=np.float32)
    probs[np.arange(len(eyes)), pred] = 0.8
    out = pd.DataFrame(
        {
            "trial_id": trial_id,
            "split": split,
            "image": eyes["image"],
            "patient": eyes["patient"],
            "true": true.astype(np.int8),
            "predicted": pred.astype(np.int8),
        }
    )
    for c in range(5):
        out[f"p{c}"] = probs[:, c]
    return out


def confirm_trials(cells: dict[tuple[str, bool], float], seeds: int) -> pd.DataFrame:
    """trials.parquet rows of the confirm stage: one per (cell, seed); hyperparameters only."""
    rows = []
    for (arch, pretrained), _ in cells.items():
        for s in range(seeds):
            tid = f"c_{arch}_{'p' if pretrained else 's'}_{s}"
            rows.append({"trial_id": tid, "status": "TERMINATED", "stage": "confirm"})
            rows[-1] |= {"seed": s, "arch": arch, "pretrained": pretrained}
    return pd.DataFrame(rows)


def simulate_test(
    rng: np.random.Generator, cells: dict[tuple[str, bool], float], seeds: int,
    n_patients: int, spread: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """(trials, predictions) of a confirm stage on one simulated test split."""
    trials = confirm_trials(cells, seeds)
    eyes = patients(rng, n_patients)
    accs = {f"c_{a}_{'p' if p else 's'}": acc for (a, p), acc in cells.items()}
    preds = [
        run_predictions(rng, eyes, tid, accs[tid.rsplit("_", 1)[0]], spread)
        for tid in trials["trial_id"]
    ]
    return trials, pd.concat(preds, ignore_index=True)


def add_confirm(
    folder: Path, cells: dict[tuple[str, bool], float], seeds: int = 3, n_patients: int = 60,
    spread: float = 0.03, seed: int = 0,
) -> Path:  # fmt: skip
    """Turn a make_results() study into one with a confirm stage: stage/seed columns, confirm
    trials (configs copied from the first search trial), predictions/ (test of every confirm
    run and of the tested search trials, val of every search trial) and config.confirm."""
    rng = np.random.default_rng(seed)
    trials = pd.read_parquet(folder / "trials.parquet")
    trials["stage"], trials["seed"] = "search", 0
    confirm = confirm_trials(cells, seeds)
    template = trials.iloc[0]
    for col in trials.columns:
        if col not in confirm.columns:
            confirm[col] = template[col]
    eyes = patients(rng, n_patients)
    accs = {f"c_{a}_{'p' if p else 's'}": acc for (a, p), acc in cells.items()}
    (folder / "predictions").mkdir(exist_ok=True)
    for tid in confirm["trial_id"]:
        rows = run_predictions(rng, eyes, tid, accs[tid.rsplit("_", 1)[0]], spread)
        write_parquet(folder / "predictions" / f"{tid}.parquet", rows)
    for _, t in trials.iterrows():
        rows = [run_predictions(rng, eyes, t["trial_id"], 0.6, 0.0, "val")]
        if pd.notna(t["test_kappa"]):
            rows.append(run_predictions(rng, eyes, t["trial_id"], 0.6, 0.0, "test"))
        write_parquet(folder / "predictions" / f"{t['trial_id']}.parquet", pd.concat(rows))
    test_kappa = {c: np.nan for c in trials.columns if c.startswith("test_")}
    confirm = confirm.assign(**test_kappa)
    write_parquet(folder / "trials.parquet", pd.concat([trials, confirm], ignore_index=True))
    meta = json.loads((folder / "study.json").read_text())
    meta["config"]["confirm"] = {"compare": ["arch", "pretrained"], "seeds": seeds}
    (folder / "study.json").write_text(json.dumps(meta, indent=2))
    return folder
