"""docs/search-spaces.md's table names every key the schema knows, and each of its `--set`
examples loads on demo.yaml.

    .venv/bin/pytest tests/test_docs_search_spaces.py
"""

from __future__ import annotations

import re
import shlex

import pytest

from study.define.dimensions import WHERE
from study.define.schema import KEYS, load_study
from tests.helpers.cli import ROOT

DOC = ROOT / "docs" / "search-spaces.md"
DEMO = ROOT / "search_spaces" / "demo.yaml"
ROWS = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]


def schema_keys() -> list[str]:
    """Every dotted key of the schema: sections' keys and top-level leaves (space.image_size
    is written as data.image_size)."""
    out = []
    for top, sub in KEYS.items():
        if isinstance(sub, dict):
            out += [f"{top}.{k}" for k in sub if not (top == "space" and k in WHERE)]
        else:
            out.append(top)
    return out


def test_every_schema_key_has_a_row():
    documented = {re.match(r"\| `([^`]+)`", row).group(1) for row in ROWS}
    missing = [k for k in schema_keys() if k not in documented]
    assert not missing, f"add rows to {DOC.name} for {missing}"
    forms = {k for k in documented if k.startswith("{")}  # the dimension forms' table
    assert not documented - forms - set(schema_keys()), "a row names a key the schema lacks"


EXAMPLES = [
    item
    for row in ROWS
    for span in re.findall(r"`(--set [^`]+)`", row)
    for item in shlex.split(span)[1:]
]


def test_the_table_gives_examples():
    assert len(EXAMPLES) >= len(schema_keys()) - 2


@pytest.mark.parametrize("item", EXAMPLES)
def test_a_set_example_loads_on_the_demo(item):
    load_study(DEMO, [item])
