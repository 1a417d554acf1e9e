"""Hand-built results folders with known values (docs/results.md), for the analysis tests.

    from tests.helpers.analyze_fixtures import make_results, DEFAULT_TRIALS
    folder = make_results(tmp_path)          # 6 trials x 3 epochs, see DEFAULT_TRIALS

Each trial is a `TrialSpec` (config, status and its val accuracy/kappa per epoch); the other
columns are derived from those by fixed formulas below, so a test can recompute any number.
Best epoch = the highest val kappa (earliest on ties). `synthetic_trials` makes big studies.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HYPERPARAMETERS = ["arch", "pretrained", "lr", "batch_size", "epochs", "weight_decay"]
CLASS_COUNTS = {
    "train": [700, 100, 120, 50, 30],
    "val": [70, 10, 12, 5, 3],  # majority share 0.70
    "test": [72, 10, 10, 5, 3],  # majority share 0.72
}
EPOCH_COLUMNS = (
    ["trial_id", "epoch", "train_loss", "train_acc", "train_kappa", "train_images_per_s"]
    + ["val_loss", "val_acc", "val_kappa", "val_balanced_acc", "val_referable_sensitivity"]
    + ["val_referable_specificity"] + [f"val_recall_{c}" for c in range(5)]
    + ["val_images_per_s", "seconds", "time_total_s"]
)  # fmt: skip
CONFUSION_COLUMNS = ["trial_id", "split", "epoch", "true", "predicted", "count"]
METRICS = ("loss", "acc", "kappa", "balanced_acc", "referable_sensitivity", "referable_specificity")


@dataclass
class TrialSpec:
    trial_id: str
    arch: str
    pretrained: bool
    lr: float
    batch_size: int
    val_acc: list[float]
    val_kappa: list[float]
    epochs: int = 3
    weight_decay: float = 1e-4
    status: str = "TERMINATED"
    stopped_early: bool = False
    test: tuple[float, float] | None = None  # (test acc, test kappa) for the best-K trials
    error: str | None = None
    seconds: float = 60.0
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


DEFAULT_TRIALS = [
    TrialSpec("t00", "resnet18", True, 1e-3, 16, [0.72, 0.78, 0.80], [0.30, 0.50, 0.60],
              test=(0.79, 0.58), seconds=30.0, device="cuda"),
    TrialSpec("t01", "resnet50", True, 3e-3, 32, [0.74, 0.79, 0.82], [0.40, 0.55, 0.65],
              weight_decay=1e-3, test=(0.81, 0.62), seconds=90.0, device="cuda"),
    TrialSpec("t02", "resnet18", False, 1e-2, 16, [0.70, 0.71, 0.74], [0.05, 0.10, 0.20],
              weight_decay=1e-5),
    TrialSpec("t03", "resnet50", False, 1e-1, 8, [0.70], [0.02], weight_decay=1e-2,
              stopped_early=True, seconds=20.0),
    TrialSpec("t04", "resnet18", True, 3e-2, 8, [0.74, 0.75], [0.20, 0.25], weight_decay=1e-3,
              status="ERROR", error="loss is nan at epoch 3", seconds=40.0),
    TrialSpec("t05", "resnet50", False, 3e-4, 32, [0.71, 0.73, 0.72], [0.10, 0.15, 0.12]),
]  # fmt: skip


def derived(acc: float, kappa: float) -> dict[str, float]:
    """The metrics a spec does not give, as fixed functions of accuracy and kappa."""
    return {
        "loss": round(2 * (1 - acc) + 0.1, 6),
        "acc": acc,
        "kappa": kappa,
        "balanced_acc": round(0.2 + 0.5 * kappa, 6),
        "referable_sensitivity": round(0.5 + 0.4 * kappa, 6),
        "referable_specificity": 0.9,
    }


def confusion_counts(counts: list[int], acc: float) -> list[list[int]]:
    """A matrix whose rows hold `counts` and about `acc` of each row on the diagonal."""
    matrix = [[0] * 5 for _ in range(5)]
    for c, n in enumerate(counts):
        correct = round(acc * n)
        matrix[c][c] = correct
        matrix[c][1 if c == 0 else 0] += n - correct  # misses go to grade 0 (or 1 for grade 0)
    return matrix


def best_epoch(spec: TrialSpec) -> int:
    return max(range(len(spec.val_kappa)), key=lambda i: (spec.val_kappa[i], -i)) + 1


def _tables(specs: list[TrialSpec], class_counts: dict) -> tuple[pd.DataFrame, ...]:
    trials, epochs, confusion = [], [], []
    for s in specs:
        for e, (acc, kappa) in enumerate(zip(s.val_acc, s.val_kappa, strict=True), start=1):
            val = derived(acc, kappa)
            train = derived(min(acc + 0.05, 1.0), kappa + 0.05)
            matrix = confusion_counts(class_counts["val"], acc)
            row = {"trial_id": s.trial_id, "epoch": e}
            row |= {f"train_{k}": train[k] for k in ("loss", "acc", "kappa")}
            row["train_images_per_s"] = 100.0
            row |= {f"val_{k}": val[k] for k in METRICS}
            row |= {
                f"val_recall_{c}": matrix[c][c] / max(n, 1)
                for c, n in enumerate(class_counts["val"])
            }
            row |= {"val_images_per_s": 200.0, "seconds": 10.0, "time_total_s": 10.0 * e}
            epochs.append(row)
            confusion += _tidy(s.trial_id, "val", e, matrix)
        b = best_epoch(s) if s.val_acc else -1
        best = derived(s.val_acc[b - 1], s.val_kappa[b - 1]) if s.val_acc else {}
        test = derived(*s.test) if s.test else {}
        if s.test:
            confusion += _tidy(
                s.trial_id, "test", b, confusion_counts(class_counts["test"], s.test[0])
            )
        row = {
            "trial_id": s.trial_id,
            "status": s.status,
            "arch": s.arch,
            "pretrained": s.pretrained,
        }
        row |= {
            "lr": s.lr,
            "batch_size": s.batch_size,
            "epochs": s.epochs,
            "weight_decay": s.weight_decay,
        }
        row |= s.extra
        row |= {"epochs_run": len(s.val_acc), "stopped_early": s.stopped_early, "best_epoch": b}
        row |= {f"best_val_{k}": best.get(k, float("nan")) for k in METRICS}
        row |= {f"test_{k}": test.get(k, float("nan")) for k in METRICS}
        row |= {"error": s.error, "seconds": s.seconds, "device": s.device, "node": "10.0.0.1"}
        trials.append(row)
    # the sweep's writer keeps every column even with no rows yet
    empty_epochs = pd.DataFrame(columns=EPOCH_COLUMNS).astype({"trial_id": str, "epoch": int})
    return (
        pd.DataFrame(trials),
        pd.DataFrame(epochs) if epochs else empty_epochs,
        pd.DataFrame(confusion, columns=CONFUSION_COLUMNS),
    )


def _tidy(trial_id: str, split: str, epoch: int, matrix: list[list[int]]) -> list[dict]:
    return [
        {
            "trial_id": trial_id,
            "split": split,
            "epoch": epoch,
            "true": t,
            "predicted": p,
            "count": c,
        }
        for t, row in enumerate(matrix)
        for p, c in enumerate(row)
    ]


def study_json(name: str, metric: str, mode: str, class_counts: dict, max_epochs: int) -> dict:
    space = {
        "arch": {"choice": ["resnet18", "resnet50"]},
        "pretrained": {"choice": [True, False]},
        "lr": {"loguniform": [1e-4, 1e-1]},
        "batch_size": {"choice": [8, 16, 32]},
        "epochs": max_epochs,
        "weight_decay": {"loguniform": [1e-5, 1e-2]},
    }
    search = {"algorithm": "optuna", "seed": 0}
    scheduler = {"name": "asha", "grace_period": 1, "reduction_factor": 3}
    return {
        "name": name,
        "space_file": f"search_spaces/{name}.yaml",
        "config": {"name": name, "space": space, "search": search, "scheduler": scheduler},
        "hyperparameters": HYPERPARAMETERS,
        "metric": {"name": metric, "mode": mode},
        "max_epochs": max_epochs,
        "data": {
            "path": "data/demo",
            "layout": "kaggle",
            "dataset_hash": "0" * 64,
            "image_size": 32,
            "preprocessing": "none",
            "split_seed": 0,
            "skipped": 0,
            "class_counts": class_counts,
            "n_images": {k: sum(v) for k, v in class_counts.items()},
        },  # fmt: skip
        "search": search,
        "scheduler": scheduler,
        "seeds": {"split": 0, "search": 0, "train": 0},
        "versions": {"python": "3.11", "optuna": "4"},
        "git_rev": None,
        "created": "2025-01-01T00:00:00+00:00",
    }


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def make_results(
    tmp_path: Path,
    trials: list[TrialSpec] | None = None,
    *,
    name: str = "fixture",
    metric: str = "val_kappa",
    mode: str = "max",
    class_counts: dict | None = None,
) -> Path:
    """Write study.json + trials/epochs/confusion.parquet under tmp_path/name; returns that."""
    specs = DEFAULT_TRIALS if trials is None else trials
    counts = class_counts or CLASS_COUNTS
    folder = Path(tmp_path) / name
    folder.mkdir(parents=True, exist_ok=True)
    max_epochs = max([s.epochs for s in specs] or [1])
    meta = study_json(name, metric, mode, counts, max_epochs)
    (folder / "study.json").write_text(json.dumps(meta, indent=2))
    trials_df, epochs_df, confusion_df = _tables(specs, counts)
    write_parquet(folder / "trials.parquet", trials_df)
    write_parquet(folder / "epochs.parquet", epochs_df)
    write_parquet(folder / "confusion.parquet", confusion_df)
    return folder


def synthetic_trials(n_trials: int, n_epochs: int, seed: int = 0) -> list[TrialSpec]:
    """A big study: random configs, rising noisy curves, ASHA-like early stops, top 3 tested."""
    rng = random.Random(seed)
    specs = []
    for i in range(n_trials):
        pretrained = rng.random() < 0.5
        top = rng.uniform(0.3, 0.8) if pretrained else rng.uniform(0.0, 0.4)
        run = n_epochs if rng.random() < 0.4 else rng.choice([1, 3, 9, n_epochs])
        kappa = [round(top * (1 - 0.8**e) + rng.gauss(0, 0.02), 4) for e in range(1, run + 1)]
        acc = [round(0.70 + 0.15 * max(k, 0), 4) for k in kappa]
        specs.append(
            TrialSpec(
                f"trial_{i:05d}", rng.choice(["resnet18", "resnet34", "resnet50"]), pretrained,
                10 ** rng.uniform(-4, -1), rng.choice([8, 16, 32]), acc, kappa, epochs=n_epochs,
                weight_decay=10 ** rng.uniform(-5, -2), stopped_early=run < n_epochs,
                seconds=run * 12.0, device="cuda",
            )
        )  # fmt: skip
    for spec in sorted(specs, key=lambda s: -max(s.val_kappa))[:3]:
        b = best_epoch(spec)
        spec.test = (spec.val_acc[b - 1] - 0.01, spec.val_kappa[b - 1] - 0.02)
    return specs
