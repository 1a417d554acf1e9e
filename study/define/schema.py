"""The one typed schema of a study: a YAML search space, validated before Ray starts.

    from study.define.schema import load_study
    study = load_study("search_spaces/demo.yaml", ["num_samples=2", "data.image_size=32"])

A study file holds `name`, `data` (`path`, `image_size` (a size in px, or sizes to search:
`{choice: [256, 384, 512]}`, `{grid: [..]}`, `depends_on`), `preprocessing`, `split_seed`, `skip_bad`,
`val_fraction`, `test_fraction`, `layout`, `split`), `space`, `search`, `scheduler`, `metric`, `num_samples`,
`max_concurrent`, `resources`, `test_top_k`, `max_failures`, `keep_checkpoints`, `seed`, `compile`,
`confirm` (`compare`: finite dimensions whose cells are retrained, `seeds`: new training seeds
per cell, 0 = off), `operating_point` (the referable-DR threshold's target met on val:
`{sensitivity: 0.9}`, the default, or `{specificity: 0.95}`), `tta` (test-time augmentation: 1, 2, 4 or 8
dihedral views of the square image averaged at test, `retina.tta`; default 1), `on_missing_weights` (`fail`, or `skip`: run scratch only where ImageNet
weights are missing), `export` (the winner's model in best/ at the end; default true),
`external` (test sets from elsewhere: `[{name: messidor2, path: /data/messidor2}]`; `confirm.test`
may name one) (see search_spaces/*.yaml). `data.path` is kept as written; a relative path is relative to the
working directory the sweep runs in (the repository root for `make sweep`).

Each dimension of `space` is a plain value (fixed), or exactly one of `{choice: [..]}`,
`{grid: [..]}` (every value tried; search `grid` or `random`), `{uniform: [lo, hi]}`,
`{loguniform: [lo, hi]}`, `{randint: [lo, hi]}` (hi exclusive, like `tune.randint`), or a value
that depends on another finite dimension: `{depends_on: arch, values: {resnet18: 10, resnet50: 5}}`.
Every mistake raises `RetinaError("<file>: <dotted.key>: <what is wrong>; <fix>")`, prefixed by
the `--set` item that caused it, if any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from retina.errors import RetinaError
from retina.layouts import PUBLISHED
from study.define.config import (  # the typed study and its allowed values
    KEEP_CHECKPOINTS,
    METRICS,
    NAME_CHARS,
    TTA_VIEWS,
    ConfirmConfig,
    DataConfig,
    ExternalSet,
    MetricConfig,
    OperatingPointConfig,
    Resources,
    SchedulerConfig,
    SearchConfig,
    StudyConfig,
)
from study.define.dimensions import DIMENSIONS, WHERE, Dimension, finite_values, parse_space
from study.define.overrides import (
    TEXT,
    Override,
    Problem,
    apply_overrides,
    blame,
    parse_set,
    read_yaml_file,
    show,
    unknown_key,
)
from study.define.section import REQUIRED, Section
from study.define.values import coerce_value

# fmt: off
__all__ = ["DIMENSIONS", "KEYS", "TTA_VIEWS", "ConfirmConfig", "Dimension", "StudyConfig", "finite_values", "hyperparameter_names",
           "load_study", "max_epochs", "resolve_trial_config", "study_from_dict", "study_to_dict"]
# fmt: on


# The YAML's key tree, read off the dataclasses' fields: a section is a field holding a
# dataclass; a leaf is None, or TEXT for text a `--set` takes verbatim (`key(verbatim=True)`).
# Three sections differ from their dataclass: `data` also holds image_size (a dimension), `space`
# holds the dimensions, and `operating_point` is written as its one target.
def _key_tree(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    tree: dict[str, Any] = {}
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            tree[f.name] = _key_tree(hints[f.name])
        else:
            tree[f.name] = TEXT if f.metadata.get("verbatim") else None
    return tree


KEYS: dict[str, Any] = _key_tree(StudyConfig)
KEYS["data"] = {"path": TEXT, "image_size": None} | KEYS["data"]  # the order errors list keys in
KEYS["space"] = dict.fromkeys(DIMENSIONS)  # space.image_size too: parse_space says where it goes
KEYS["operating_point"] = {"sensitivity": None, "specificity": None}
_SECTIONS = {name: list(tree) for name, tree in KEYS.items() if isinstance(tree, dict)}


def _parse(doc: Any) -> StudyConfig:
    top = Section(doc, "", list(KEYS), _SECTIONS)
    name = top.text("name")
    if not set(name) <= NAME_CHARS or set(name) == {"."} or len(name) > 100:
        fix = "use up to 100 letters, digits, '_', '.', '-' (e.g. demo-2)"
        raise Problem("name", f"{show(name)} is not a usable folder name", fix)
    d = top.section("data", REQUIRED)
    data = d.build(DataConfig)
    if data.split == "published" and data.layout not in ("auto", *PUBLISHED):
        what = f"the {data.layout} layout publishes no train/test split"
        fix = f"use split: patient, or a layout that publishes one ({', '.join(PUBLISHED)})"
        raise Problem("data.split", what, fix, ["data.layout"])
    if data.val_fraction + data.test_fraction >= 1.0:
        what, fix = "val_fraction + test_fraction must be < 1", "leave a share for training"
        raise Problem("data.test_fraction", what, fix, ["data.val_fraction"])
    search = top.section("search").build(SearchConfig)
    # data.image_size is a dimension written under data (searchable, a cache per size)
    in_data = {name: d.get(key.split(".", 1)[1], REQUIRED) for name, key in WHERE.items()}
    space = parse_space(top.get("space", REQUIRED), search.algorithm, in_data)
    scheduler = top.section("scheduler").build(SchedulerConfig)
    longest = _max_epochs(space)
    if scheduler.name == "asha" and scheduler.grace_period > longest:
        what = f"{scheduler.grace_period} is more than the most epochs a trial runs ({longest})"
        raise Problem(
            "scheduler.grace_period", what, f"set it to at most {longest}", ["space.epochs"]
        )
    m = top.section("metric")
    metric_name = m.text("name", MetricConfig.name, list(METRICS))
    mode = m.text("mode", METRICS[metric_name], ("max", "min"))
    if mode != METRICS[metric_name]:
        what = f"{metric_name} is {'minimised' if mode == 'max' else 'maximised'}, not {mode}"
        raise Problem("metric.mode", what, f"use mode: {METRICS[metric_name]}", ["metric.name"])
    r = top.section("resources")
    gpu = r.get("gpu", Resources.gpu)
    resources = r.build(Resources, gpu="auto" if gpu == "auto" else r.float("gpu", ge=0.0))
    max_concurrent = (
        None if top.get("max_concurrent", None) is None else top.int("max_concurrent", lo=1)
    )
    external = _parse_external(top.get("external", []))
    confirm = _parse_confirm(top.section("confirm"), space)
    if confirm.test != "test" and confirm.test not in {e.name for e in external}:
        names = ", ".join(["test", *(e.name for e in external)])
        what = f"{show(confirm.test)} is neither test nor an external set of the study"
        fix = f"choose one of {names}, or add the set under external"
        raise Problem("confirm.test", what, fix, ["external"])
    return top.build(
        StudyConfig,
        name=name,
        data=data,
        space=space,
        search=search,
        scheduler=scheduler,
        metric=MetricConfig(metric_name, mode),
        max_concurrent=max_concurrent,
        resources=resources,
        keep_checkpoints=_keep_checkpoints(top),
        confirm=confirm,
        external=external,
        operating_point=_parse_operating_point(
            top.section("operating_point", {"sensitivity": OperatingPointConfig.value})
        ),
        tta=_parse_tta(top),
        storage=None if top.get("storage", None) is None else top.text("storage"),
    )


def _parse_tta(top: Section) -> int:
    value = top.get("tta", StudyConfig.tta)
    # type() too: true == 1 and 8.0 == 8 in Python, and neither is a number of views
    if type(value) is not int or value not in TTA_VIEWS:
        what = f"expected 1, 2, 4 or 8 views, got {show(value)}"
        sizes = "; ".join(f"{n}: {views}" for n, views in TTA_VIEWS.items())
        fix = f"write the views of the square image averaged at test ({sizes})"
        raise Problem("tta", what, fix)
    return value


def _keep_checkpoints(top: Section) -> str:
    value = top.get("keep_checkpoints", StudyConfig.keep_checkpoints)
    if value not in KEEP_CHECKPOINTS:  # an int here was once a count for Ray: say what changed
        what = f"expected needed or all, got {show(value)}"
        fix = (
            "write needed (after the study, keep only the checkpoints of the tested trials and "
            "the winner; a running trial keeps its latest and its best) or all"
        )
        raise Problem("keep_checkpoints", what, fix)
    return value


def _parse_confirm(c: Section, space: dict[str, Dimension]) -> ConfirmConfig:
    compare = c.get("compare", list(ConfirmConfig.compare))
    if not isinstance(compare, list) or not all(isinstance(n, str) for n in compare):
        fix = "write a list of dimension names, e.g. [arch, pretrained]"
        raise Problem("confirm.compare", f"expected a list of names, got {show(compare)}", fix)
    for name in compare:
        if name not in space:
            hint = unknown_key("", name, list(space)).args[0].split("; ", 1)[1]
            raise Problem("confirm.compare", f"{show(name)} is not a dimension", hint)
        if finite_values(space[name]) is None:
            what = f"{name} is {space[name].kind}: its values are not a list of cells"
            fix = "compare dimensions written as a value, choice, grid or depends_on"
            raise Problem("confirm.compare", what, fix, [f"space.{name}"])
    if len(set(compare)) != len(compare):
        raise Problem("confirm.compare", f"{show(compare)} names a dimension twice", "name it once")
    return c.build(ConfirmConfig, compare=tuple(compare))


def _parse_external(raw: Any) -> tuple[ExternalSet, ...]:
    """`external: [{name: messidor2, path: /data/messidor2}, ...]`: names unique and usable as
    folder names; paths kept as written (the preflight says when one is missing)."""
    example = "write e.g. external: [{name: messidor2, path: /data/messidor2}]"
    if not isinstance(raw, list):
        raise Problem("external", f"expected a list of sets, got {show(raw)}", example)
    sets: list[ExternalSet] = []
    for i, item in enumerate(raw):
        where = f"external[{i}]"
        if not isinstance(item, dict):
            raise Problem(where, f"expected {{name: ..., path: ...}}, got {show(item)}", example)
        entry = Section(item, where, ["name", "path"])
        name, path = entry.text("name"), entry.text("path")
        if not set(name) <= NAME_CHARS or set(name) == {"."} or len(name) > 100 or name == "test":
            fix = "use up to 100 letters, digits, '_', '.', '-', other than test (e.g. messidor2)"
            raise Problem(f"{where}.name", f"{show(name)} is not a usable set name", fix)
        if name in {s.name for s in sets}:
            raise Problem(f"{where}.name", f"{show(name)} names two sets", "give each its own name")
        sets.append(ExternalSet(name, path))
    return tuple(sets)


def with_external(doc: Any, items: Sequence[str]) -> Any:
    """`doc` with `--external NAME=PATH` items appended to its `external` list."""
    if not items or not isinstance(doc, dict):
        return doc
    added = []
    for item in items:
        name, _, path = str(item).partition("=")
        if not name.strip() or not path.strip():
            fix = "write --external NAME=PATH, e.g. --external messidor2=/data/messidor2"
            raise RetinaError(f"--external {item}: expected NAME=PATH; {fix}")
        added.append({"name": name.strip(), "path": path.strip()})
    before = doc.get("external") or []
    return {**doc, "external": [*before, *added] if isinstance(before, list) else before}


def _parse_operating_point(o: Section) -> OperatingPointConfig:
    given = [t for t in ("sensitivity", "specificity") if t in o.raw]
    if len(given) != 1:
        what = "names no target" if not given else "names both sensitivity and specificity"
        fix = "write one target met on val, e.g. {sensitivity: 0.9} or {specificity: 0.95}"
        keys = ["operating_point.sensitivity", "operating_point.specificity"]
        raise Problem("operating_point", what, fix, keys)
    # 1.0 is allowed: it asks that every referable val image be flagged
    return OperatingPointConfig(given[0], o.float(given[0], gt=0.0, le=1.0))


def _label(item: str) -> str:
    return f"--set {item if len(item) <= 100 else item[:97] + '...'}"


def study_from_dict(
    doc: Any, source: str = "<study>", overrides: Sequence[str] = (), external: Sequence[str] = ()
) -> StudyConfig:
    """Validate a document (as read from YAML) after applying `--set` items and adding the
    `--external NAME=PATH` sets; see `load_study`."""
    parsed: list[Override] = []
    for item in overrides:
        try:
            parsed.append(parse_set(str(item), KEYS))
        except Problem as problem:
            raise RetinaError(f"{source}: {_label(str(item))}: {problem}") from None
    if doc is None:
        raise RetinaError(
            f"{source}: the file is empty; a study needs at least name, data and space (see search_spaces/demo.yaml)"
        )
    if not isinstance(doc, dict):
        raise RetinaError(
            f"{source}: expected a mapping of keys (name, data, space, ...) at the top, got {show(doc)}; see search_spaces/demo.yaml"
        )
    try:
        return _parse(with_external(apply_overrides(doc, parsed), external))
    except Problem as problem:
        culprit = blame(problem, parsed)
        label = f"{_label(culprit.item)}: " if culprit else ""
        raise RetinaError(f"{source}: {label}{problem}") from None
    except RecursionError:  # a self-referencing YAML alias somewhere we walk
        raise RetinaError(
            f"{source}: the document refers to itself (YAML alias loop); remove it"
        ) from None


def load_study(
    path: str | Path, overrides: Sequence[str] = (), external: Sequence[str] = ()
) -> StudyConfig:
    """Read, override (`KEY=VALUE` items, dotted keys), add external sets (`NAME=PATH`) and
    validate a study file."""
    return study_from_dict(read_yaml_file(path), str(path), overrides, external)


def study_to_dict(cfg: StudyConfig) -> dict[str, Any]:
    """The resolved study (defaults filled) as JSON-serialisable data; loads back to `cfg`."""
    out = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    out = {key: asdict(value) if is_dataclass(value) else value for key, value in out.items()}
    out["data"]["image_size"] = cfg.space["image_size"].to_yaml()  # as written: under data
    out["space"] = {name: dim.to_yaml() for name, dim in cfg.space.items() if name not in WHERE}
    out["confirm"]["compare"] = list(cfg.confirm.compare)  # as JSON and YAML give it back
    out["external"] = [asdict(e) for e in cfg.external]
    out["operating_point"] = cfg.operating_point.to_yaml()  # the YAML's one-key form
    return out


def hyperparameter_names(cfg: StudyConfig) -> list[str]:
    """Every hyperparameter (fixed ones too), in the stable order of `DIMENSIONS`."""
    return [name for name in DIMENSIONS if name in cfg.space]


def _max_epochs(space: dict[str, Dimension]) -> int:
    dim = space["epochs"]
    values = finite_values(dim)
    return int(max(values)) if values is not None else int(dim.high) - 1  # randint: hi exclusive


def max_epochs(cfg: StudyConfig) -> int:
    """The most epochs any trial can run (ASHA's `max_t`)."""
    return _max_epochs(cfg.space)


def resolve_trial_config(cfg: StudyConfig, sampled: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter with a concrete, plainly typed value, from a trial's sampled config.

    Sampled dimensions come from `sampled` (numpy scalars become int/float/bool); fixed ones from
    the study; conditional ones by looking up the value of the dimension they depend on. Keys of
    `sampled` that are not hyperparameters are left out. A sampled value that is missing or of the
    wrong type raises ValueError: that is a bug or a changed space, not a user's typo.
    """
    out: dict[str, Any] = {}
    for name, dim in cfg.space.items():
        if dim.kind == "fixed":
            out[name] = dim.values[0]
        elif dim.kind != "conditional":
            if name not in sampled:
                raise ValueError(f"trial config has no value for {name!r}: {sampled!r}")
            out[name] = coerce_value(name, sampled[name])
    for name, dim in cfg.space.items():
        if dim.kind == "conditional":
            key = out[dim.depends_on]
            matches = [value for k, value in dim.by if k == key and type(k) is type(key)]
            if not matches:
                raise ValueError(f"{name} has no value for {dim.depends_on}={key!r}")
            out[name] = matches[0]
    return {name: out[name] for name in cfg.space}
