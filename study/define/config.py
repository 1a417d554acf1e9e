"""The typed study: the dataclasses `study.define.schema` parses a YAML search space into, and
the values its fields allow.

    from study.define.schema import load_study   # builds a StudyConfig from a file
    study.space["lr"], study.confirm.seeds, study.tta

Nothing here reads files or validates: the parser (schema.py) checks every value against these
names and says which key is wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.define.dimensions import Dimension, finite_values

PREPROCESSING = ("none", "graham")
ALGORITHMS = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "none")
KEEP_CHECKPOINTS = ("needed", "all")  # after the study: the tested trials' and winner's, or all
# on_missing_weights: stop, or drop pretrained=true (study/run/weights_policy.py)
MISSING_WEIGHTS = ("fail", "skip")
# tta: the dihedral subgroups retina.tta averages over (named here so that validating needs no
# torch; tests check they agree with retina.tta.TTA_VIEWS)
TTA_VIEWS = {
    1: "the image as is",
    2: "+ its left-right mirror",
    4: "+ the up-down mirror and the 180-degree turn (the flips training uses)",
    8: "+ the 90/270-degree turns and the two diagonal mirrors",
}
METRICS = {"val_kappa": "max", "val_acc": "max", "val_balanced_acc": "max", "val_loss": "min"}
SEED_MAX = 2**32 - 1  # numpy RandomState / Optuna TPESampler accept 0 .. 2**32-1
NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


@dataclass(frozen=True)
class DataConfig:
    """`data` less `image_size`, which is a dimension (`StudyConfig.space["image_size"]`)."""

    path: str
    preprocessing: str = "none"
    split_seed: int = 0
    skip_bad: bool = False
    val_fraction: float = 0.15
    test_fraction: float = 0.15


@dataclass(frozen=True)
class SearchConfig:
    algorithm: str = "optuna"
    seed: int = 0


@dataclass(frozen=True)
class SchedulerConfig:
    name: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class MetricConfig:
    name: str = "val_kappa"
    mode: str = "max"


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float | str = "auto"  # a number of GPUs per trial (fractions ok) or "auto"


@dataclass(frozen=True)
class ConfirmConfig:
    """After the search: each cell of `compare` (its best search trial) retrained `seeds` times."""

    compare: tuple[str, ...] = ("arch", "pretrained")
    seeds: int = 0  # 0: no confirmation stage


@dataclass(frozen=True)
class OperatingPointConfig:
    """The referable-DR threshold's target, met on val: YAML `{sensitivity: 0.9}` or
    `{specificity: 0.95}` (study.analyze.referable chooses the threshold)."""

    target: str = "sensitivity"
    value: float = 0.9

    def to_yaml(self) -> dict[str, float]:
        return {self.target: self.value}


@dataclass(frozen=True)
class StudyConfig:
    name: str
    data: DataConfig
    space: dict[str, Dimension]  # every name of DIMENSIONS, in that order
    search: SearchConfig
    scheduler: SchedulerConfig
    metric: MetricConfig
    num_samples: int = 1
    max_concurrent: int | None = None
    resources: Resources = Resources()
    test_top_k: int = 3
    max_failures: int = 2
    keep_checkpoints: str = "needed"
    seed: int = 0
    compile: bool = False
    confirm: ConfirmConfig = ConfirmConfig()
    on_missing_weights: str = "fail"
    operating_point: OperatingPointConfig = OperatingPointConfig()
    # Views averaged by every test of a trained model (held-out, confirm, export, predict's
    # default). The search's val metrics stay one view: N views would cost N times every val
    # pass of every trial, and the views are a choice for the chosen model, not one to tune.
    tta: int = 1
    # The winner's model in best/ (ONNX, weights, card) at the end; False: the study ends without
    # it (a search not meant to ship, a scripted run), and `python -m study.export` makes it later.
    export: bool = True
    # Where Ray writes trial folders and checkpoints: a local folder or s3://BUCKET/PREFIX
    # (study.record.storage); None: the results folder. Never holds a secret (AWS_* env vars).
    storage: str | None = None

    @property
    def image_sizes(self) -> tuple[int, ...]:
        """Every size a trial can be decoded at, smallest first: one decode-once cache each."""
        return tuple(sorted(finite_values(self.space["image_size"]) or ()))
