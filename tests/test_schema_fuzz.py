"""Generated malformed search spaces (hypothesis): random documents, random mutations of the
shipped files, random YAML text and random `--set` items each give a `StudyConfig` or a
`RetinaError` with a one-line-ish message, never any other exception.

    .venv/bin/pytest tests/test_schema_fuzz.py
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retina.errors import RetinaError
from study.define.schema import (
    KEYS,
    StudyConfig,
    load_study,
    max_epochs,
    resolve_trial_config,
    study_from_dict,
    study_to_dict,
)

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
SHIPPED = {p.name: yaml.safe_load(p.read_text()) for p in SPACES}
FUZZ = settings(
    max_examples=200,
    database=None,  # no .hypothesis folder in the repository
    deadline=None,  # the first example imports torch (retina.models) to list the archs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _words(tree: dict) -> set[str]:
    out = set(tree)
    for sub in tree.values():
        if isinstance(sub, dict):
            out |= _words(sub)
    return out


def _dotted(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, sub in tree.items():
        out.append(prefix + key)
        if isinstance(sub, dict):
            out += _dotted(sub, prefix + key + ".")
    return out


KEY_WORDS = sorted(_words(KEYS) | {"choice", "grid", "uniform", "loguniform", "randint",
                                   "depends_on", "values"})  # fmt: skip
VALUE_WORDS = ["resnet18", "resnet50", "resnet34", "sgd", "adamw", "optuna", "grid", "random",
               "asha", "none", "val_kappa", "val_loss", "max", "min", "auto", "data/demo",
               "graham", "arch", "pretrained", "epochs"]  # fmt: skip

keys = st.sampled_from(KEY_WORDS) | st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 70)
    | st.integers()
    | st.floats()
    | st.sampled_from([1e-4, 0.1, 0.9, 1.0, 0.5, 1e-2])
    | st.sampled_from(VALUE_WORDS)
    | st.text(max_size=10)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(keys | st.integers() | st.booleans(), children, max_size=4)
    ),
    max_leaves=20,
)
documents = st.dictionaries(keys, values, max_size=8) | values


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check(load) -> StudyConfig | None:
    """Run `load`; a valid study must round-trip through JSON and resolve a trial."""
    try:
        cfg = load()
    except RetinaError as exc:
        message = str(exc)
        assert message and len(message) < 2000, message  # short: values are abbreviated
        return None
    assert isinstance(cfg, StudyConfig)
    resolved = study_to_dict(cfg)
    assert json.loads(json.dumps(resolved)) == resolved  # study.json compares equal on --resume
    assert study_from_dict(json.loads(json.dumps(resolved)), "study.json") == cfg
    sampled = {}
    for name, dim in cfg.space.items():
        if dim.kind in ("choice", "grid"):
            sampled[name] = dim.values[-1]
        elif dim.sampled:
            sampled[name] = dim.low
    assert set(resolve_trial_config(cfg, sampled)) == set(cfg.space)
    assert max_epochs(cfg) >= 1
    return cfg


@FUZZ
@given(documents)
def test_random_documents(doc):
    check(lambda: study_from_dict(doc, "fuzz.yaml"))


@FUZZ
@given(documents)
def test_random_documents_as_yaml_files(folder, doc):
    path = folder / "doc.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    check(lambda: load_study(path))


def _paths(node, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, sub in node.items():
            out += _paths(sub, (*prefix, key))
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            out += _paths(sub, (*prefix, i))
    return out


def _mutate(doc, path: tuple, op: str, key, value):
    """`doc` copied with `value` replacing, deleted at or inserted under `path`."""
    doc = copy.deepcopy(doc)
    if not path:
        return value if op == "replace" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    target = parent[last]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif isinstance(target, dict):
        target[key] = value
    elif isinstance(target, list):
        target.insert(len(target) // 2, value)
    else:
        parent[last] = [target, value]
    return doc


@FUZZ
@given(st.sampled_from(sorted(SHIPPED)), st.data())
def test_mutations_of_the_shipped_spaces(name, data):
    doc = SHIPPED[name]
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths))
        op = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        doc = _mutate(doc, path, op, data.draw(keys), data.draw(scalars | values))
    check(lambda: study_from_dict(doc, name))


@FUZZ
@given(st.sampled_from(SPACES), st.data())
def test_character_edits_of_the_shipped_files(folder, source, data):
    text = source.read_text()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        insert = data.draw(st.sampled_from(list("{}[]:,-#&*!|>'\"% \n\t0e.") + ["", "  ", "1e-"]))
        cut = data.draw(st.integers(0, 3))
        text = text[:at] + insert + text[at + cut :]
    path = folder / "edited.yaml"
    path.write_text(text)
    check(lambda: load_study(path))


yaml_text = st.text(
    alphabet=st.sampled_from(list("{}[]:,-#&*!|>?'\"%@` \n\tabcz019.eE+_")), max_size=60
)


@FUZZ
@given(yaml_text | st.text(max_size=40))
def test_random_yaml_text(folder, text):
    path = folder / "text.yaml"
    path.write_text(text, encoding="utf-8")
    check(lambda: load_study(path))


DOTTED = _dotted(KEYS)
dotted = st.sampled_from(DOTTED) | st.builds(
    lambda a, b: f"{a}.{b}", st.sampled_from(DOTTED), st.sampled_from(KEY_WORDS)
)
value_text = (
    st.sampled_from(VALUE_WORDS + ["1e-3", "2", "32", "0", "-1", "0.5", "true", "false", "null",
                                   "{choice: [16, 32]}", "{grid: [true, false]}", "[8, 16]",
                                   "{loguniform: [1e-4, 1e-2]}", "{randint: [1, 4]}", "'x'",
                                   "{depends_on: arch, values: {resnet18: 2, resnet50: 3}}"])
    | st.builds(lambda v: yaml.safe_dump(v, default_flow_style=True).strip(), values)
    | yaml_text
)  # fmt: skip
well_formed = st.builds(lambda k, v: f"{k}={v}", dotted, value_text)
set_items = st.one_of(well_formed, well_formed, well_formed, st.text(max_size=20))


@FUZZ
@given(st.sampled_from(sorted(SHIPPED)), st.lists(set_items, min_size=1, max_size=3))
def test_random_set_overrides(name, items):
    check(lambda: study_from_dict(SHIPPED[name], name, items))


def _attr(cfg: StudyConfig, dotted: str):
    if dotted == "data.image_size":  # a dimension written under data
        return cfg.space["image_size"].values[0]
    node = cfg
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node.values[0] if dotted.startswith("space.") else node


VALID = {
    "num_samples": (st.integers(1, 10_000), str),
    "data.image_size": (st.integers(32, 1024), str),
    "search.seed": (st.integers(0, 2**32 - 1), str),
    "space.lr": (st.floats(1e-9, 10.0), repr),  # repr gives 1e-05: read as a float
    "space.momentum": (st.floats(0.0, 0.999), repr),
    "space.pretrained": (st.booleans(), lambda b: str(b).lower()),
    "space.batch_size": (st.integers(2, 512), str),
    "name": (st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,20}", fullmatch=True), str),
    "data.path": (
        st.text(min_size=1).map(str.strip).filter(lambda t: t and t[0] not in "'\""),
        str,
    ),
}
valid_items = st.sampled_from(sorted(VALID)).flatmap(
    lambda key: VALID[key][0].map(lambda value: (key, value))
)


@FUZZ
@given(valid_items)
def test_valid_overrides_land_with_their_type(item):
    key, value = item
    cfg = check(
        lambda: study_from_dict(SHIPPED["demo.yaml"], "demo", [f"{key}={VALID[key][1](value)}"])
    )
    assert cfg is not None and _attr(cfg, key) == value
