"""What a study will cost, printed by the preflight before the first image is decoded.

    images: train 700, val 150, test 150 (1,000 in all)
    cache 64 px: 0.01 GB, built (~/.cache/retina-study/...)
    cache disk: 0.00 GB to write, 41.20 GB free at ~/.cache/retina-study
    trials: 8 (each up to 3 epochs; ASHA stops weak ones early)
    time: up to ~0.3 h of trial time (8 x 3 epochs at ~45 s), scaled from study demo here (...)

The time is a rough bound: the most recent other study in the same results folder gives the
pixels per second this machine trained and validated at (epochs.parquet's images/s times the
trial's image_size squared, medians), scaled to this study's images and sizes. The arch, the
batch size and trials sharing the machine change it; no earlier study, no estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from retina.cache_cost import DataPlan
from study.define.dimensions import trial_count
from study.define.schema import StudyConfig, max_epochs
from study.record.layout import EPOCHS_FILE, TRIALS_FILE


@dataclass(frozen=True)
class PastRate:
    study: str
    train_px_per_s: float  # training pixels (images x size^2) per second, one trial
    val_px_per_s: float
    images_per_s: float  # as recorded, for the message
    sizes: tuple[int, ...]
    archs: tuple[str, ...]


def _rate(folder: Path) -> PastRate | None:
    try:
        epochs = pq.read_table(folder / EPOCHS_FILE).to_pandas()
        trials = pq.read_table(folder / TRIALS_FILE).to_pandas()
    except (OSError, ValueError):
        return None
    needed = {"trial_id", "image_size", "arch"}
    if not needed <= set(trials.columns) or epochs.empty:
        return None
    rows = epochs.merge(trials[list(needed)], on="trial_id")
    rows = rows[(rows["train_images_per_s"] > 0) & (rows["val_images_per_s"] > 0)]
    if rows.empty:
        return None
    pixels = rows["image_size"].astype(float) ** 2
    return PastRate(
        folder.name,
        float(np.median(rows["train_images_per_s"] * pixels)),
        float(np.median(rows["val_images_per_s"] * pixels)),
        float(np.median(rows["train_images_per_s"])),
        tuple(sorted(int(s) for s in rows["image_size"].unique())),
        tuple(sorted(str(a) for a in rows["arch"].unique())),
    )


def past_rate(results: Path, this: Path) -> PastRate | None:
    """The most recent other study in `results` with timed epochs, or None."""
    folders = [p.parent for p in results.glob(f"*/{EPOCHS_FILE}") if p.parent != this]
    for folder in sorted(folders, key=lambda f: (f / EPOCHS_FILE).stat().st_mtime, reverse=True):
        rate = _rate(folder)
        if rate is not None:
            return rate
    return None


def study_cost_lines(study: StudyConfig, plan: DataPlan, folder: Path) -> list[str]:
    """The preflight's cost lines: the data plan's, the trials, and a time bound if known."""
    trials, epochs = trial_count(study.space, study.num_samples), max_epochs(study)
    early = "; ASHA stops weak ones early" if study.scheduler.name == "asha" else ""
    lines = [*plan.lines(), f"trials: {trials} (each up to {epochs} epochs{early})"]
    rate = past_rate(folder.parent, folder)
    if rate is None:
        lines.append(f"time: no earlier study in {folder.parent} to estimate from")
        return lines
    sizes = study.image_sizes
    mean_px = float(np.mean([s * s for s in sizes]))
    per_epoch = mean_px * (plan.images["train"] / rate.train_px_per_s
                           + plan.images["val"] / rate.val_px_per_s)  # fmt: skip
    hours = trials * epochs * per_epoch / 3600
    shown = f"{hours:.1f}" if hours >= 0.1 else f"{math.ceil(hours * 600) / 600:.2f}"
    lines.append(
        f"time: up to ~{shown} h of trial time ({trials} x {epochs} epochs at ~{per_epoch:.0f} s), "
        f"scaled from study {rate.study} here ({', '.join(rate.archs)} at "
        f"{', '.join(map(str, rate.sizes))} px, {rate.images_per_s:.0f} train images/s a "
        "trial; rough: another arch, batch size or load changes it)"
    )
    return lines
