"""Every command the README, docs/ or an error message names parses, without running its work.

    .venv/bin/pytest tests/test_documented_commands.py

A `python -m ...` line must name a module that exists and whose `parse_args` accepts its
arguments (a study is loaded with its `--set` items); a `make ...` line a target of the
Makefile; a flag that a message suggests must be one a command takes, and a `--set` key one
the schema knows. The broken samples at the end show that each check can fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.cli import ROOT
from tests.helpers.commands import (
    cli_modules,
    documented_commands,
    message_suggestions,
    options,
    problem,
    set_key_problem,
)

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = [c for doc in DOCS for c in documented_commands(doc)]
SOURCES = sorted(p for folder in ("retina", "study") for p in (ROOT / folder).rglob("*.py"))
# The commands that prepare a user's data folder: a message of the data core reaches both.
DATA_CLIS = ("retina.train", "study.sweep")
DATA_CORE = ("retina/cache.py", "retina/prepare.py", "retina/manifest.py")


def test_the_docs_name_commands():
    assert len(COMMANDS) >= 10, [c.where for c in COMMANDS]  # the collector finds them


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.where)
def test_a_documented_command_parses(command):
    assert problem(command.text) is None, (
        f"{command.where}: `{command.text}`: {problem(command.text)}"
    )


@pytest.fixture(scope="module")
def accepted() -> dict[str, set[str]]:
    return {name: options(name) for name in cli_modules()}


def test_every_command_exposes_parse_args(accepted):
    assert {"study.sweep", "retina.train", "study.analyze"} <= set(accepted)
    assert all("--help" in flags for flags in accepted.values()), accepted


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_flag_or_set_key_a_message_suggests_exists(source, accepted):
    by_command, keys = message_suggestions(source)
    name = source.relative_to(ROOT).as_posix()
    for cli, given in by_command.items():
        if cli is not None:
            assert cli in accepted, f"{name} suggests python -m {cli}, which is no command"
            missing = sorted(given - accepted[cli])
            assert not missing, f"{name} suggests python -m {cli} {missing}; it does not take it"
    flags = by_command.get(None, set())
    unknown = sorted(flags - set().union(*accepted.values()))
    assert not unknown, f"{name} suggests {unknown}, which no command takes"
    if name in DATA_CORE:
        for cli in DATA_CLIS:
            missing = sorted(flags - accepted[cli])
            assert not missing, f"{name} suggests {missing}; python -m {cli} does not take it"
    bad = {key: why for key in keys if (why := set_key_problem(key))}
    assert not bad, f"{name} suggests --set keys the schema refuses: {bad}"


# ---- the checks fail on broken samples ---------------------------------------------------
BROKEN = """
Run `python -m study.sweep search_spaces/demo.yaml --skip-bda` or

```bash
python -m retina.nope --data DIR
python -m study.sweep search_spaces/demo.yaml \\
    --set data.skip_badd=true
python -m study.sweep search_spaces/nothing.yaml
make sweeep SPACE=search_spaces/demo.yaml
python -m retina.train --data data/demo --epochs N  # N: a placeholder parses as 1
make sweep DATA=/data/eyepacs
```
"""


def test_broken_samples_are_caught(tmp_path):
    doc = tmp_path / "broken.md"
    doc.write_text(BROKEN)
    found = {c.text.split(" #")[0].strip(): problem(c.text) for c in documented_commands(doc)}
    assert len(found) == 7, found
    assert (
        "unrecognized arguments: --skip-bda"
        in found["python -m study.sweep search_spaces/demo.yaml --skip-bda"]
    )
    assert found["python -m retina.nope --data DIR"] == "no module retina.nope"
    continued = next(p for t, p in found.items() if "skip_badd" in t)
    assert "data.skip_badd" in continued and "skip_bad" in continued  # the schema's own advice
    assert "no search space" in found["python -m study.sweep search_spaces/nothing.yaml"]
    assert found["make sweeep SPACE=search_spaces/demo.yaml"] == "no make target sweeep"
    assert found["python -m retina.train --data data/demo --epochs N"] is None
    assert found["make sweep DATA=/data/eyepacs"] is None


def test_a_message_suggesting_a_flag_no_command_takes_is_caught(tmp_path, accepted):
    source = tmp_path / "broken.py"
    source.write_text(
        "from retina.errors import RetinaError\n"
        "fix = 'pass --skip-bda to leave them out'\n"
        "raise RetinaError(f'{3} bad images; {fix} or --set data.skip_badd=true')\n"
        "print('or make data with `python -m retina.synthetic --outt DIR`; then train')\n"
    )
    flags, keys = message_suggestions(source)
    assert flags == {None: {"--skip-bda", "--set"}, "retina.synthetic": {"--outt"}}
    assert keys == {"data.skip_badd"}
    assert "--outt" not in accepted["retina.synthetic"]
    assert "--skip-bda" not in set().union(*accepted.values())
    assert re.search("skip_badd", set_key_problem("data.skip_badd") or "")
    assert set_key_problem("data.skip_bad") is None


def test_the_bad_image_message_names_a_flag_both_data_commands_take(accepted):
    flags, _ = message_suggestions(ROOT / "retina" / "cache.py")
    assert "--skip-bad" in flags[None]
    assert all("--skip-bad" in accepted[cli] for cli in DATA_CLIS)


def test_docs_exist():
    assert all(isinstance(p, Path) and p.is_file() for p in DOCS)


# ---- references to the docs from the tree -----------------------------------------------
REF = re.compile(
    r'(README(?:\.md)?|docs/[\w-]+\.md)(?:,\s*"([^"\n]+)"|, ([A-Z][\w-]*(?: [\w-]+)*))?'
)
TREE = [ROOT / "pyproject.toml", ROOT / "Makefile", *sorted((ROOT / ".ci").glob("*")), *DOCS,
        *SOURCES, *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "search_spaces").glob("*"))]  # fmt: skip


def headings(doc: Path) -> set[str]:
    return {
        line.lstrip("#").strip().lower()
        for line in doc.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


def reference_problems(text: str) -> list[str]:
    """Each `README, "Section"` / `docs/x.md, "Section"` (or a bare `README, Section`) whose file
    or heading does not exist."""
    out = []
    for name, quoted, bare in REF.findall(text):
        doc = ROOT / ("README.md" if name.startswith("README") else name)
        if not doc.is_file():
            out.append(f"{name}: no such file")
        elif bare:
            out.append(f'{name}, {bare}: write the section as a quoted heading, "{bare}"')
        elif quoted and quoted.lower() not in headings(doc):
            out.append(f'{name}, "{quoted}": no such heading')
    return out


@pytest.mark.parametrize("path", [p for p in TREE if p.is_file()], ids=lambda p: p.name)
def test_a_reference_to_the_docs_names_a_file_and_heading_that_exist(path):
    if path.name == "test_documented_commands.py":
        return  # its broken samples below
    problems = reference_problems(path.read_text(encoding="utf-8", errors="replace"))
    assert not problems, f"{path.relative_to(ROOT)}: {problems}"


def test_a_reference_to_a_missing_heading_or_file_is_caught():
    assert reference_problems('(README, "Reading the report")') == []
    assert reference_problems('see docs/search-spaces.md, "Every key"') == []
    assert reference_problems('(README, "Tested versions")') == [
        'README, "Tested versions": no such heading'
    ]
    assert reference_problems("(README, Layout)") == [
        'README, Layout: write the section as a quoted heading, "Layout"'
    ]
    assert reference_problems("docs/nothing.md") == ["docs/nothing.md: no such file"]
