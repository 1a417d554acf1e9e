"""The dimensions of a study's search space: a fixed value, a distribution, or a conditional value.

    space:
      arch: {choice: [resnet18, resnet50]}          # Tune/Optuna pick one per trial
      pretrained: {grid: [true, false]}             # every value tried (search grid or random)
      lr: {loguniform: [1.0e-4, 1.0e-1]}            # also uniform: [lo, hi]
      batch_size: {randint: [8, 33]}                # whole numbers lo .. hi-1 (hi exclusive)
      epochs: {depends_on: arch, values: {resnet18: 10, resnet50: 5}}
      momentum: 0.9                                 # a plain value: fixed for every trial
      schedule: {choice: [constant, cosine]}        # lr per batch, after warmup_epochs of warm-up
      augment: {choice: [flips, fundus]}            # fundus: + rotation, zoom, colour
    data:
      image_size: {choice: [256, 384, 512]}         # a dimension written under data: a cache each

`study.define.schema` calls `parse_space`; `study.define.space` turns the result into Ray Tune objects.
Each value in it is checked by `study.define.values` (its type, names and bounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from study.define.overrides import Problem, closest, show, unknown_key
from study.define.values import EXAMPLES, TYPES, check_value, number

# fmt: off
DIMENSIONS = ("arch", "pretrained", "lr", "batch_size", "epochs", "weight_decay", "optimizer",
              "momentum", "class_weighted", "schedule", "warmup_epochs", "augment", "head",
              "image_size")
# Dimensions the YAML writes under `data`, not `space`: the size is what the data is decoded
# to (a decode-once cache per size), yet searchable, and a column of trials.parquet like any.
WHERE = {"image_size": "data.image_size"}
SPACE_NAMES = tuple(name for name in DIMENSIONS if name not in WHERE)
DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
CONDITIONAL = ("depends_on", "values")
# arch, lr, batch_size, epochs and image_size have no default: a study must say what it trains.
DEFAULTS = {"pretrained": False, "weight_decay": 0.0, "optimizer": "sgd", "momentum": 0.9,
            "class_weighted": False, "schedule": "constant", "warmup_epochs": 0, "augment": "flips",
            "head": "classify"}
# fmt: on


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter of the space; `kind` says which fields hold it."""

    name: str
    kind: str  # "fixed" | "choice" | "grid" | "uniform" | "loguniform" | "randint" | "conditional"
    values: tuple = ()  # fixed: (value,); choice, grid: the options
    low: float | int | None = None  # uniform, loguniform, randint (whose high is exclusive)
    high: float | int | None = None
    depends_on: str | None = None  # conditional: the dimension whose value selects ours ...
    by: tuple[tuple[Any, Any], ...] = ()  # ... as (its value, our value) pairs

    @property
    def sampled(self) -> bool:
        """True when Tune/Optuna choose the value (not fixed, not conditional)."""
        return self.kind in DISTRIBUTIONS

    def to_yaml(self) -> Any:
        """The YAML/JSON form this dimension is parsed from (conditional keys as text)."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind in ("choice", "grid"):
            return {self.kind: list(self.values)}
        if self.kind == "conditional":
            return {"depends_on": self.depends_on, "values": {key_text(k): v for k, v in self.by}}
        return {self.kind: [self.low, self.high]}


def finite_values(dim: Dimension) -> tuple | None:
    """Every value `dim` can take, in order; None for uniform, loguniform and randint."""
    if dim.kind == "conditional":
        return tuple(dict.fromkeys(value for _, value in dim.by))
    return dim.values if dim.kind in ("fixed", "choice", "grid") else None


def key_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _options(name: str, key: str, kind: str, arg: Any) -> Dimension:
    if not isinstance(arg, list) or not arg:
        raise Problem(
            key, f"expected a non-empty list, got {show(arg)}", f"write e.g. {kind}: [16, 32]"
        )
    values: list = []
    for i, raw in enumerate(arg):
        value = check_value(name, f"{key}[{i}]", raw)
        if value in values:
            raise Problem(f"{key}[{i}]", f"{show(raw)} is listed twice", "list each value once")
        values.append(value)
    return Dimension(name, kind, tuple(values))


def _range(name: str, key: str, kind: str, arg: Any) -> Dimension:
    if not isinstance(arg, list) or len(arg) != 2:
        raise Problem(key, f"expected [low, high], got {show(arg)}", f"write e.g. {kind}: [1, 4]")
    low = check_value(name, f"{key}[0]", arg[0])
    if kind == "randint":  # high is exclusive and may be any whole number above low
        if not isinstance(arg[1], int) or isinstance(arg[1], bool) or arg[1] <= low:
            fix = f"high is exclusive, like tune.randint: [{low}, {low + 1}] gives only {low}"
            raise Problem(f"{key}[1]", f"expected a whole number > {low}, got {show(arg[1])}", fix)
        return Dimension(name, kind, low=low, high=arg[1])
    high = check_value(name, f"{key}[1]", arg[1])
    if not low < high:
        raise Problem(key, f"low must be < high, got {show(arg)}", "write [low, high]")
    if kind == "loguniform" and low <= 0:
        raise Problem(
            f"{key}[0]", f"loguniform needs low > 0, got {show(arg[0])}", "use e.g. 1.0e-6"
        )
    return Dimension(name, kind, low=low, high=high)


# Which distributions fit which type of value, and how messages name that type.
_FITS = {str: ("choice", "grid"), bool: ("choice", "grid"), int: ("choice", "grid", "randint"),
         float: ("choice", "grid", "uniform", "loguniform")}  # fmt: skip
_WORDS = {str: "a name", bool: "true or false", int: "a whole number", float: "a real number"}


def _plain(name: str, key: str, raw: Any) -> Dimension:
    if isinstance(raw, list):
        fix = "to search over it write {choice: [...]} or {grid: [...]}"
        raise Problem(key, f"a list is not a value: {show(raw)}", fix)
    if not isinstance(raw, dict):
        return Dimension(name, "fixed", (check_value(name, key, raw),))
    for word in raw:
        if word not in DISTRIBUTIONS + CONDITIONAL:
            raise unknown_key(key, word, DISTRIBUTIONS + CONDITIONAL)
    if len(raw) != 1:
        fix = "give exactly one of choice, grid, uniform, loguniform, randint"
        what = f"has {len(raw)} distributions ({', '.join(map(str, raw))})" if raw else "is empty"
        raise Problem(key, what, fix)
    ((kind, arg),) = raw.items()
    if name == "image_size" and kind not in ("choice", "grid"):
        what = f"{kind} is not a list of sizes, and each size needs a decode-once cache"
        raise Problem(f"{key}.{kind}", what, "list them, e.g. {choice: [256, 384, 512]}")
    fits = _FITS[TYPES[name]]
    if kind not in fits:
        what = f"{kind} does not fit {name}, {_WORDS[TYPES[name]]}"
        raise Problem(f"{key}.{kind}", what, f"use {', '.join(fits)} (randint's high is exclusive)")
    make = _options if kind in ("choice", "grid") else _range
    return make(name, f"{key}.{kind}", kind, arg)


def _is_conditional(raw: Any) -> bool:
    return isinstance(raw, dict) and any(word in raw for word in CONDITIONAL)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # True == 1 in Python, but not here


def _match(key: Any, options: tuple) -> Any:
    """The option a `values:` key names: the value itself or its text (JSON keys are text)."""
    for option in options:
        if _same(key, option) or (isinstance(option, float) and number(key) == option):
            return option
        if isinstance(key, str) and key.strip().lower() == key_text(option).lower():
            return option
    return None


def _conditional(name: str, key: str, raw: dict, dims: dict[str, Dimension]) -> Dimension:
    example = "write e.g. {depends_on: arch, values: {resnet18: 10, resnet50: 5}}"
    for word in raw:
        if word not in CONDITIONAL:
            raise Problem(key, f"mixes depends_on/values with {show(word)}", example)
    for word in CONDITIONAL:
        if word not in raw:
            raise Problem(f"{key}.{word}", "missing", example)
    dep = raw["depends_on"]
    if dep not in DIMENSIONS:
        best = closest(dep, DIMENSIONS)
        fix = f"did you mean {best}?" if best else f"name one of {', '.join(DIMENSIONS)}"
        raise Problem(f"{key}.depends_on", f"unknown dimension {show(dep)}", fix)
    target = dims.get(dep)
    options = finite_values(target) if target and target.kind != "conditional" else None
    if dep == name or options is None:
        what = "itself" if dep == name else f"{dep}, which is not a choice, grid or fixed value"
        fix = "depend on a dimension written as choice, grid or a plain value"
        raise Problem(f"{key}.depends_on", f"{name} cannot depend on {what}", fix, [key_of(dep)])
    values = raw["values"]
    if not isinstance(values, dict) or not values:
        what = (
            f"expected a mapping from each value of {dep} to a value of {name}, got {show(values)}"
        )
        raise Problem(f"{key}.values", what, example)
    listed = ", ".join(key_text(o) for o in options)
    chosen: list[tuple[Any, Any]] = []
    for k, v in values.items():
        where = f"{key}.values.{key_text(k)}"
        option = _match(k, options)
        if option is None:
            fix = f"use its values: {listed}"
            raise Problem(where, f"{show(k)} is not a value of {key_of(dep)}", fix, [key_of(dep)])
        if any(_same(c, option) for c, _ in chosen):
            raise Problem(where, f"{show(k)} is given twice", f"give each value of {dep} once")
        chosen.append((option, check_value(name, where, v)))
    for option in options:
        if not any(_same(c, option) for c, _ in chosen):
            what, fix = f"no value for {dep} = {key_text(option)}", f"give one for each of {listed}"
            raise Problem(f"{key}.values", what, fix, [key_of(dep)])
    by = tuple(next(p for p in chosen if _same(p[0], o)) for o in options)
    return Dimension(name, "conditional", depends_on=dep, by=by)


def key_of(name: str) -> str:
    """Where the YAML writes dimension `name`: `space.<name>`, or under `data` (WHERE)."""
    return WHERE.get(name, f"space.{name}")


def parse_space(raw: Any, algorithm: str, data: dict[str, Any]) -> dict[str, Dimension]:
    """Every dimension of `DIMENSIONS` (defaults filled), validated for the search `algorithm`;
    `data` holds those written under the YAML's `data` (WHERE), as given there."""
    if not isinstance(raw, dict):
        fix = "write e.g. space: {arch: resnet18, lr: 1.0e-3, batch_size: 16, epochs: 2}"
        raise Problem("space", f"expected a mapping of dimensions, got {show(raw)}", fix)
    for word in raw:
        if word in WHERE:
            fix = f"move it to {WHERE[word]} (a size, or e.g. {{choice: [256, 384, 512]}})"
            raise Problem(f"space.{word}", f"{word} is written under data", fix, [WHERE[word]])
        if word not in SPACE_NAMES:
            raise unknown_key("space", word, SPACE_NAMES)
    raw = {**raw, **data}
    dims: dict[str, Dimension] = {}
    for name in DIMENSIONS:
        if name not in raw and name not in DEFAULTS:
            raise Problem(key_of(name), "missing", f"add e.g. {name}: {EXAMPLES[name]}")
        if name not in raw:
            dims[name] = Dimension(name, "fixed", (DEFAULTS[name],))
        elif not _is_conditional(raw[name]):
            dims[name] = _plain(name, key_of(name), raw[name])
    for name in DIMENSIONS:  # after the others: a conditional looks up what it depends on
        if name in raw and _is_conditional(raw[name]):
            dims[name] = _conditional(name, key_of(name), raw[name], dims)
    for name, dim in dims.items():
        if algorithm == "optuna" and dim.kind == "grid":
            what = "grid: [...] does not work with search.algorithm optuna"
            fix = "write choice: [...] (Optuna samples it), or use search.algorithm grid or random"
            raise Problem(key_of(name), what, fix, ["search.algorithm"])
        if algorithm == "grid" and dim.sampled and dim.kind != "grid":
            what = f"{dim.kind} is not a grid, and search.algorithm grid only enumerates grids"
            fix = (
                "write it as grid: [...] or a plain value, or use search.algorithm random or optuna"
            )
            raise Problem(key_of(name), what, fix, ["search.algorithm"])
    check_warmup(dims)
    return {name: dims[name] for name in DIMENSIONS}


def _extreme(dim: Dimension, pick) -> int:
    """The least (pick=min) or most (pick=max) whole number a finite or randint `dim` takes."""
    values = finite_values(dim)
    if values is not None:
        return int(pick(values))
    return int(dim.low) if pick is min else int(dim.high) - 1  # randint: high is exclusive


def _warmup_pairs(dims: dict[str, Dimension]) -> list[tuple[int, int, str]]:
    """(warm-up, epochs, the case in words) pairs a trial can draw, the worst first.

    Conditional values are paired by what they depend on (warm-up by epochs, or both by the
    same dimension); otherwise any warm-up may meet any epochs, so the most meets the fewest.
    """
    warm, epochs = dims["warmup_epochs"], dims["epochs"]
    if warm.kind == "conditional" and warm.depends_on == "epochs":
        pairs = [(w, e, f"epochs = {e}") for e, w in warm.by]
    elif warm.kind == "conditional" and warm.depends_on == epochs.depends_on:
        by = dict(epochs.by)
        pairs = [(w, by[k], f"{warm.depends_on} = {key_text(k)}") for k, w in warm.by]
    else:
        pairs = [(_extreme(warm, max), _extreme(epochs, min), "")]
    return sorted(pairs, key=lambda p: p[1] - p[0])


def check_warmup(dims: dict[str, Dimension]) -> None:
    """A Problem unless every trial keeps at least one epoch after its warm-up."""
    warm, epochs, case = _warmup_pairs(dims)[0]
    if warm < epochs:
        return
    when = f" where {case}" if case else ""
    what = (
        f"{warm} warm-up epochs leave no epoch after the warm-up{when}: a trial can run as few "
        f"as {epochs} epochs (space.epochs)"
    )
    fix = f"set warmup_epochs to at most {epochs - 1}, or raise the fewest epochs above {warm}"
    raise Problem("space.warmup_epochs", what, fix, ["space.epochs"])


def trial_count(space: dict[str, Dimension], num_samples: int) -> int:
    """Trials a complete search runs: `num_samples` times each combination of the grids."""
    count = num_samples
    for dim in space.values():
        if dim.kind == "grid":
            count *= len(dim.values)
    return count
