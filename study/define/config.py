"""The typed study: the dataclasses `study.define.schema` parses a YAML search space into, and
the values its fields allow.

    from study.define.schema import load_study   # builds a StudyConfig from a file
    study.space["lr"], study.confirm.seeds, study.tta

Nothing here reads files or validates: the parser (schema.py) checks every value against these
names and says which key is wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any

from retina.layouts import LAYOUT_NAMES, SPLITS
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


def key(default: Any, doc: str, **rule: Any) -> Any:
    """A study key's one home: its default, its one-line doc (docs/search-spaces.md) and the rule
    the parser checks: `choices=`, `lo=`/`hi=` (int), `gt=`/`ge=`/`lt=`/`le=` (float), and
    `verbatim=True` for text a `--set` takes as written (names, paths) rather than as YAML.
    `MISSING` as the default: the YAML must give it."""
    return field(default=default, metadata={"doc": doc, **rule})


@dataclass(frozen=True)
class DataConfig:
    """`data` less `image_size`, which is a dimension (`StudyConfig.space["image_size"]`)."""

    path: str = key(MISSING, "folder of the images and label CSV(s)", verbatim=True)
    preprocessing: str = key(
        "none", "graham: subtract the local mean colour (Graham 2015)", choices=PREPROCESSING,
        verbatim=True,
    )  # fmt: skip
    split_seed: int = key(0, "seed of the patient-level train/val/test split", hi=SEED_MAX)
    skip_bad: bool = key(False, "leave unreadable images out (counted) instead of stopping")
    val_fraction: float = key(0.15, "share of patients in val", gt=0.0, lt=1.0)
    test_fraction: float = key(0.15, "share of patients in the held-out test", gt=0.0, lt=1.0)
    # the folder's layout: detected, or forced (retina.layouts reads each)
    layout: str = key("auto", "auto: detected from the folder; or force one",
                      choices=("auto", *LAYOUT_NAMES), verbatim=True)  # fmt: skip
    split: str = key("patient", "patient-level split, or published: the dataset's own (IDRiD, DDR)",
                     choices=SPLITS, verbatim=True)  # fmt: skip


@dataclass(frozen=True)
class SearchConfig:
    algorithm: str = key("optuna", "how trials are proposed", choices=ALGORITHMS, verbatim=True)
    seed: int = key(0, "the searcher's seed", hi=SEED_MAX)


@dataclass(frozen=True)
class SchedulerConfig:
    name: str = key("asha", "asha stops weak trials early; none runs every epoch",
                    choices=SCHEDULERS, verbatim=True)  # fmt: skip
    grace_period: int = key(1, "epochs every trial runs before ASHA may stop it", lo=1)
    reduction_factor: float = key(2.0, "ASHA keeps 1/reduction_factor at each rung", gt=1.0)


@dataclass(frozen=True)
class MetricConfig:
    name: str = key("val_kappa", "the val metric trials are ranked by", choices=tuple(METRICS),
                    verbatim=True)  # fmt: skip
    mode: str = key("max", "max or min; must match the metric", choices=("max", "min"),
                    verbatim=True)  # fmt: skip


@dataclass(frozen=True)
class Resources:
    cpu: float = key(1.0, "CPUs per trial", gt=0.0)
    # a number of GPUs per trial (fractions share one) or "auto" (one where CUDA is)
    gpu: float | str = key("auto", "GPUs per trial (0.25: four trials share one) or auto")


@dataclass(frozen=True)
class ConfirmConfig:
    """After the search: each cell of `compare` (its best search trial) retrained `seeds` times."""

    compare: tuple[str, ...] = key(
        ("arch", "pretrained"), "finite dimensions whose cells are compared"
    )
    seeds: int = key(0, "new training seeds per cell (0: no confirm stage)", hi=100)
    # the half-width the seeds-needed advice aims for: the smallest difference worth seeds
    margin: float = key(0.05, "smallest kappa difference worth deciding (the seeds advice)", gt=0.0)
    # test: the held-out split; an external set's name: the pairs are compared on that set
    test: str = key("test", "the set the comparison tests on: test or an external set's name",
                    verbatim=True)  # fmt: skip


@dataclass(frozen=True)
class ExternalSet:
    """A data folder from elsewhere, tested once like the held-out test (docs/external-test-sets.md)."""

    name: str  # its split in predictions/ (`external:<name>`) and its key in summary.json
    path: str  # kept as written, like data.path


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
    name: str = key(MISSING, "the study's folder under --results", verbatim=True)
    data: DataConfig = key(MISSING, "where the images are and how they are split")
    space: dict[str, Dimension] = key(MISSING, "the hyperparameters: fixed values or ranges")
    search: SearchConfig = key(SearchConfig(), "the searcher")
    scheduler: SchedulerConfig = key(SchedulerConfig(), "early stopping of weak trials")
    metric: MetricConfig = key(MetricConfig(), "what the search optimises")
    num_samples: int = key(1, "trials the search runs", lo=1)
    max_concurrent: int | None = key(None, "trials at once (default: as resources allow)")
    resources: Resources = key(Resources(), "per trial")
    test_top_k: int = key(3, "best trials tested on the held-out test")
    max_failures: int = key(2, "retries of a trial whose worker died")
    keep_checkpoints: str = key(
        "needed", "needed: after the study keep the tested trials' and the winner's; or all",
        choices=KEEP_CHECKPOINTS,
    )  # fmt: skip
    seed: int = key(0, "training seed of the search trials", hi=SEED_MAX)
    compile: bool = key(False, "torch.compile the model")
    confirm: ConfirmConfig = key(ConfirmConfig(), "the confirm stage after the search")
    on_missing_weights: str = key(
        "fail", "skip: run scratch only where ImageNet weights are missing", choices=MISSING_WEIGHTS
    )
    operating_point: OperatingPointConfig = key(
        OperatingPointConfig(), "the referable-DR threshold's target met on val"
    )
    # Views averaged by every test of a trained model (held-out, confirm, export, predict's
    # default). The search's val metrics stay one view: N views would cost N times every val
    # pass of every trial, and the views are a choice for the chosen model, not one to tune.
    tta: int = key(
        1, "test-time augmentation: 1, 2, 4 or 8 dihedral views", choices=tuple(TTA_VIEWS)
    )
    # The winner's model in best/ (ONNX, weights, card) at the end; False: the study ends without
    # it (a search not meant to ship, a scripted run), and `python -m study.export` makes it later.
    export: bool = key(True, "write the winner's model to best/ at the end")
    # Read by the development data's readers, tested once after the held-out test with what was
    # fitted on val; nothing is fitted on them (study.conclude.external).
    external: tuple[ExternalSet, ...] = key((), "external test sets: [{name: N, path: DIR}, ...]")
    # Where Ray writes trial folders and checkpoints: a local folder or s3://BUCKET/PREFIX
    # (study.record.storage); None: the results folder. Never holds a secret (AWS_* env vars).
    storage: str | None = key(None, "a folder or s3://BUCKET/PREFIX for Ray's trial folders and "
                              "checkpoints (default: the results folder)", verbatim=True)  # fmt: skip

    @property
    def image_sizes(self) -> tuple[int, ...]:
        """Every size a trial can be decoded at, smallest first: one decode-once cache each."""
        return tuple(sorted(finite_values(self.space["image_size"]) or ()))
