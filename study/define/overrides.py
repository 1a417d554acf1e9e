"""Reading a study's raw document: the YAML file (safe loader) and `--set key=value` overrides.

    python -m study.sweep search_spaces/demo.yaml --set num_samples=2 --set space.lr=1.0e-3

`study.define.schema` validates what these functions return; this module only turns text into plain
dicts/lists/scalars, reports syntax problems with line and column, checks that an override's
dotted key exists, and applies overrides to a copy of the document. Everything a user can get
wrong ends as a `RetinaError` (or a `Problem` that `study.define.schema` turns into one).
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from retina.errors import RetinaError

# Leaves of the key tree whose value is text: `--set` takes these verbatim (unless quoted), so
# `--set name=2024` or `--data /srv/eyes: 2` give strings, not an int or a YAML mapping.
TEXT = "text"


class Problem(Exception):
    """One problem at a dotted key of a study document; `study.define.schema` adds the file and override.

    `related` lists other keys the problem involves (e.g. `search.algorithm` for a grid dimension
    under Optuna), so an override that set one of them is named in the message.
    """

    def __init__(self, key: str, what: str, fix: str, related: Sequence[str] = ()):
        super().__init__(f"{key}: {what}; {fix}" if key else f"{what}; {fix}")
        self.key = key
        self.related = tuple(related)


class StudyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (plain data only, no Python tags) that also reads `1e-4` as a float.

    PyYAML follows YAML 1.1, where `1e-4` and `1.0e4` are strings; every user writes learning
    rates that way, so we add YAML 1.2's float forms. Nothing else differs from `yaml.safe_load`.
    """


StudyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = 6
_REPR.maxlevel = 3


def show(value: Any) -> str:
    """A short YAML-flavoured rendering of a value for messages (never huge, never raises)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return _REPR.repr(value)
    except Exception:  # e.g. an int too long for str(); the type is enough to fix it
        return f"a {type(value).__name__} value"


def closest(word: object, options: Sequence[str]) -> str | None:
    match = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_key(prefix: str, word: object, options: Sequence[str]) -> Problem:
    key = f"{prefix}.{word}" if prefix else str(word)
    best = closest(word, options)
    if best is not None:
        fix = f"did you mean {prefix + '.' if prefix else ''}{best}?"
    else:
        fix = f"valid keys here: {', '.join(options)}"
    return Problem(key, "unknown key", fix)


def parse_yaml(text: str, key: str = "") -> Any:
    """Plain data from YAML text; a syntax problem is a `Problem` at `key` with line and column."""
    try:
        return yaml.load(text, Loader=StudyLoader)  # a SafeLoader subclass: no Python objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        if "constructor for the tag" in str(exc.problem):  # e.g. !!python/object: not built
            raise Problem(
                key,
                f"{at}invalid YAML: a tag that builds objects is not allowed ({exc.problem})",
                "remove the tag (the word starting with !) and write a plain value",
            ) from None
        what = exc.problem or exc.context or "not valid"
        raise Problem(
            key,
            f"{at}invalid YAML ({what})",
            "fix the syntax there (indentation, a missing ':' or closing bracket, or quote the value)",
        ) from None
    except yaml.reader.ReaderError as exc:  # a control character; its str() spans lines
        line = text.count("\n", 0, exc.position) + 1
        what = f"line {line}: character {exc.character!r} is not allowed in YAML"
        raise Problem(
            key, what, "remove it (or write it as an escape in a quoted string)"
        ) from None
    except RecursionError:
        raise Problem(key, "the YAML is nested too deeply", "simplify it") from None
    except Exception as exc:  # PyYAML raises ValueError etc. for e.g. 5000-digit integers
        raise Problem(key, f"cannot read the YAML ({exc})", "fix the value") from None


def read_yaml_file(path: str | Path) -> Any:
    """The document of a YAML file; a missing/unreadable/non-UTF-8/invalid file is a RetinaError."""
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise RetinaError(
            f"{where}: file not found; check the path (the shipped studies are "
            "search_spaces/demo.yaml, lab3.yaml and full.yaml)"
        ) from None
    except IsADirectoryError:
        raise RetinaError(f"{where}: is a folder; give a YAML file in it") from None
    except OSError as exc:
        raise RetinaError(f"{where}: cannot read the file ({exc.strerror}); check it") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM written by some Windows editors
    except UnicodeDecodeError as exc:
        raise RetinaError(
            f"{where}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    try:
        return parse_yaml(text)
    except Problem as problem:
        raise RetinaError(f"{where}: {problem}") from None


@dataclass(frozen=True)
class Override:
    """One `--set` item (`space.lr=-1`), its dotted path and its parsed value."""

    item: str
    path: tuple[str, ...]
    value: Any


def parse_set(item: str, keys: Mapping[str, Any]) -> Override:
    """Parse `KEY=VALUE`; KEY is a dotted path into `keys` (a tree: leaf None or TEXT).

    VALUE is read as YAML so `2`, `false`, `1.0e-3`, `[16, 32]` and `{choice: [a, b]}` get their
    types; TEXT leaves (names, paths, enums) are taken verbatim unless quoted.
    """
    if "=" not in item:
        raise Problem("", "expected KEY=VALUE", "e.g. --set num_samples=2")
    key, text = item.split("=", 1)
    parts = tuple(part.strip() for part in key.strip().split("."))
    node: Any = keys
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        if not isinstance(node, Mapping):
            value = "{choice: [...]}" if prefix.startswith("space.") else "VALUE"
            raise Problem(
                prefix, "is one setting, not a section", f"set it whole: --set {prefix}={value}"
            )
        if part not in node:
            raise unknown_key(prefix, part, list(node))
        node = node[part]
    stripped = text.strip()
    if node == TEXT and not stripped.startswith(("'", '"')):
        return Override(item, parts, stripped)
    return Override(item, parts, parse_yaml(text, ".".join(parts)))


def apply_overrides(doc: dict, overrides: Sequence[Override]) -> dict:
    """A copy of `doc` with each override set at its path (missing sections are created).

    Sections are copied along the path only, so the caller's document is never changed. Where
    the file holds a non-mapping at a section (e.g. `data: 5`) the override is skipped and the
    validation reports the file's mistake.
    """
    doc = dict(doc)
    for override in overrides:
        node = doc
        for part in override.path[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                break
            child = dict(child)
            node[part] = child
            node = child
        else:
            node[override.path[-1]] = override.value
    return doc


def _within(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith((prefix + ".", prefix + "["))


def blame(problem: Problem, overrides: Sequence[Override]) -> Override | None:
    """The last override that set the key of `problem` (or a key it involves), if any."""
    keys = [k for k in (problem.key, *problem.related) if k]
    for override in reversed(overrides):
        path = ".".join(override.path)
        if any(_within(key, path) for key in keys):
            return override
    return None
