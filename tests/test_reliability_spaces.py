"""Generated bad search spaces through the real CLI: `python -m study.sweep` exits 2 with the
schema's message, no traceback, and starts nothing (no Ray, no results folder).

    .venv/bin/pytest tests/test_reliability_spaces.py

test_schema_fuzz.py throws thousands of random documents, mutations, YAML texts and `--set`
items at the schema in-process; here a few of the rejected ones go through the command line,
so the path from the file to the user's terminal is covered too. A YAML payload that would
build a Python object must be refused, not run.
"""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retina.errors import RetinaError
from study.define.schema import load_study
from tests.helpers.cli import ROOT, run_cli

CLI = settings(
    max_examples=4,  # each example is a process (torch import): a few seconds
    derandomize=True,  # the same examples every run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DEMO = yaml.safe_load((ROOT / "search_spaces" / "demo.yaml").read_text())


def refused_without_starting(proc, expected: str, results) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr == f"error: {expected}\n"  # the schema's message, word for word
    assert "Ray" not in proc.stdout
    assert not results.exists()


BAD_VALUES = st.sampled_from(
    [None, -1, 0, 1e309, "", "resnet9000", [], {}, {"choice": []}, {"loguniform": [1, 0]},
     {"grid": "x"}, {"depends_on": "nothing", "values": {}}, True, "1e-3x", [1, [2]]]
)  # fmt: skip
KEYS = st.sampled_from(
    [("name",), ("data",), ("data", "image_size"), ("space", "lr"), ("space", "arch"),
     ("space", "epochs"), ("search", "algorithm"), ("scheduler", "grace_period"),
     ("metric", "name"), ("num_samples",), ("resources", "gpu"), ("space", "typo_key")]
)  # fmt: skip


@CLI
@given(KEYS, BAD_VALUES)
def test_mutated_space_file_is_refused_by_the_cli(tmp_path_factory, key, value):
    doc = copy.deepcopy(DEMO)
    node = doc
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = value
    folder = tmp_path_factory.mktemp("space")
    path = folder / "bad.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        load_study(path)
    except RetinaError as exc:
        expected = str(exc)
    else:
        return  # this mutation happens to be valid: nothing to refuse
    results = folder / "results"
    proc = run_cli("study.sweep", str(path), "--results", str(results), timeout=120)
    refused_without_starting(proc, expected, results)


SET_ITEMS = st.sampled_from(
    ["space.lr=-1", "num_samples=zero", "space.arch={choice: [resnet9]}", "no_such_key=1",
     "space.epochs={randint: [3, 1]}", "data.image_size=8", "metric.mode=sideways",
     "=", "space", "space.batch_size=[16, ", "seed=-5"]
)  # fmt: skip


@CLI
@given(st.lists(SET_ITEMS, min_size=1, max_size=2))
def test_bad_set_items_are_refused_by_the_cli(tmp_path_factory, items):
    space = str(ROOT / "search_spaces" / "demo.yaml")
    with pytest.raises(RetinaError) as info:
        load_study(space, items)
    results = tmp_path_factory.mktemp("set") / "results"
    sets = [arg for item in items for arg in ("--set", item)]
    proc = run_cli("study.sweep", space, "--results", str(results), *sets, timeout=120)
    refused_without_starting(proc, str(info.value), results)


def test_yaml_python_object_payload_is_refused_not_run(tmp_path):
    """The YAML is read with a safe loader: a `!!python/...` tag never builds or calls anything."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(
        f'name: !!python/object/apply:os.system ["touch {marker}"]\n'
        "data: {path: data/demo, image_size: 32}\n"
        "space: {arch: resnet18}\n"
    )
    proc = run_cli("study.sweep", str(path), "--results", str(tmp_path / "results"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {path}: ")
    assert "python/object/apply:os.system" in proc.stderr  # names the tag it refused
    assert "a tag that builds objects is not allowed" in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--report-every", "-1", "--report-every -1: give seconds >= 0 (0: off)"),
        ("--report-cpu", "0", "--report-cpu 0: give a percent in (0, 100]"),
        ("--report-cpu", "150", "--report-cpu 150: give a percent in (0, 100]"),
    ],
)
def test_bad_live_report_flags_are_refused_before_anything_starts(tmp_path, flag, value, expected):
    results = tmp_path / "results"
    space = str(ROOT / "search_spaces" / "demo.yaml")
    proc = run_cli("study.sweep", space, "--results", str(results), flag, value, timeout=120)
    refused_without_starting(proc, expected, results)
