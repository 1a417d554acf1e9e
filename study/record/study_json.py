"""`study.json`: what a study was run with, so its results can be trusted and reproduced."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from retina.prepare import PreparedData
from study.define.schema import StudyConfig, hyperparameter_names, max_epochs
from study.define.space import confirm_seeds

PACKAGES = ("torch", "torchvision", "ray", "optuna", "numpy", "pandas", "pyarrow", "pillow")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python's version and each package's installed version (or "not installed")."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision() -> str | None:
    """The harness's commit (with `-dirty` when it has local changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev or None


def study_record(study: StudyConfig, resolved: dict, data: PreparedData, space_file: str) -> dict:
    counts = data.class_counts()
    skipped = len(data.cache.skipped_indices)
    return {
        "name": study.name,
        "space_file": space_file,
        "config": resolved,
        "hyperparameters": hyperparameter_names(study),
        "metric": {"name": study.metric.name, "mode": study.metric.mode},
        "max_epochs": max_epochs(study),
        "data": {
            "path": str(data.data_dir),
            "layout": data.layout,
            "dataset_hash": data.manifest_hash,
            # one size, or every size the study searches (each trial's is in trials.parquet)
            "image_size": data.image_size if len(data.sizes) == 1 else list(data.sizes),
            "preprocessing": data.preprocessing,
            "split_seed": data.split.seed,
            "n_images": {split: int(sum(c)) for split, c in counts.items()},
            "class_counts": counts,
            "skipped": skipped,
            "ungradable": data.ungradable,  # left out of every split, as the dataset grades them
            "split": data.split_mode,
            "cache": str(data.cache.path),  # the smallest size's; caches: each size's
            "caches": {str(s): str(data.at_size(s).cache.path) for s in data.sizes},
        },
        "search": resolved.get("search"),
        "scheduler": resolved.get("scheduler"),
        "seeds": {
            "split": study.data.split_seed,
            "search": study.search.seed,
            "train": study.seed,
            "confirm": confirm_seeds(study),  # the confirm stage's runs, one per seed and cell
        },
        "versions": package_versions(),
        "git_rev": git_revision(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def external_record(external: dict[str, PreparedData]) -> dict[str, dict]:
    """study.json's `external`: per external test set, its folder, layout, hash and grades."""
    return {
        name: {
            "path": str(ext.data_dir),
            "layout": ext.layout,
            "dataset_hash": ext.manifest_hash,
            "n_images": len(ext.split.test),
            "class_counts": ext.class_counts()["test"],
            "skipped": len(ext.cache.skipped_indices),
        }
        for name, ext in external.items()
    }
