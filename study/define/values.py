"""One value of one dimension: its type, its names or bounds, checked where it comes in.

    check_value("lr", "space.lr.loguniform[0]", 1e-3)    # from the YAML: a Problem at the key
    coerce_value("batch_size", np.int64(16))             # from Tune/Optuna: a plain int

The names of the text dimensions are the core's (retina.engine, retina.schedules,
retina.augment, retina.heads), written again here so that validating a study needs no torch;
tests check they agree. `study.define.dimensions` builds dimensions from these values.
"""

from __future__ import annotations

import math
from typing import Any

from retina.archs import ARCH_NAMES
from study.define.overrides import Problem, show

# fmt: off
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine")  # retina.schedules.SCHEDULES (tests check they agree)
AUGMENTS = ("flips", "fundus")  # retina.augment.AUGMENTS
# classify: 5-way softmax + cross-entropy; regress: one output, SmoothL1 on the grade, cut by
# thresholds (retina.heads; as OPTIMIZERS, named here so that validating needs no torch).
HEADS = ("classify", "regress")
TYPES = {"arch": str, "pretrained": bool, "lr": float, "batch_size": int, "epochs": int,
         "weight_decay": float, "optimizer": str, "momentum": float, "class_weighted": bool,
         "schedule": str, "warmup_epochs": int, "augment": str, "head": str, "image_size": int}
# Names of the text dimensions other than arch (retina.archs.ARCH_NAMES, read without torch).
NAMES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment": AUGMENTS, "head": HEADS}
# Whole-number dimensions not starting at 1; below 32 px a ResNet's stride-32 stem leaves no
# 1x1 map to pool, and above 1024 px one cache of 35,000 photographs is over 100 GB.
LOWEST = {"batch_size": 2, "warmup_epochs": 0, "image_size": 32}
HIGHEST = {"image_size": 1024}
EXAMPLES = {"arch": "{choice: [resnet18, resnet50]}", "lr": "{loguniform: [1.0e-4, 1.0e-1]}",
            "batch_size": "{choice: [16, 32]}", "epochs": "{choice: [2, 3]}", "image_size": "512"}
# fmt: on


def number(value: Any) -> float | None:
    """`value` as a finite float, or None (bools, text, inf, nan and huge ints are not numbers)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def check_value(name: str, key: str, value: Any) -> Any:
    """`value` validated (and ints made floats) for dimension `name`, or a Problem at `key`."""
    kind = TYPES[name]
    if kind is bool:
        if not isinstance(value, bool):
            raise Problem(key, f"expected true or false, got {show(value)}", "write true or false")
        return value
    if kind is str:
        choices = ARCH_NAMES if name == "arch" else NAMES[name]
        if not isinstance(value, str) or value not in choices:
            raise Problem(
                key, f"unknown {name} {show(value)}", f"choose one of {', '.join(choices)}"
            )
        return value
    if kind is int:
        lo = LOWEST.get(name, 1)
        if not isinstance(value, int) or isinstance(value, bool):
            fix = f"write e.g. {EXAMPLES.get(name, lo * 8)}"
            raise Problem(key, f"expected a whole number, got {show(value)}", fix)
        if value < lo:
            raise Problem(key, f"must be >= {lo}, got {show(value)}", f"use {lo} or more")
        if value > HIGHEST.get(name, value):
            hi = HIGHEST[name]
            raise Problem(key, f"must be <= {hi}, got {show(value)}", f"use {hi} or less")
        return value
    out = number(value)
    if out is None:
        raise Problem(key, f"expected a finite number, got {show(value)}", "write e.g. 1.0e-3")
    if name == "lr" and not out > 0:
        raise Problem(
            key, f"must be > 0, got {show(value)}", "use a positive learning rate, e.g. 1.0e-3"
        )
    if name == "weight_decay" and out < 0:
        raise Problem(key, f"must be >= 0, got {show(value)}", "use 0 for none, or e.g. 1.0e-4")
    if name == "momentum" and not 0 <= out < 1:
        raise Problem(key, f"must be in [0, 1), got {show(value)}", "use e.g. 0.9")
    return out


def coerce_value(name: str, value: Any) -> Any:
    """A value Tune/Optuna sampled for `name` as a plain Python value (numpy scalars unwrapped)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    kind = TYPES[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"trial value {value!r} for {name!r} is not a {kind.__name__}")
    return value
