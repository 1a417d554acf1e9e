"""One mapping of a study's YAML read with typed getters: each wrong value raises a `Problem`
naming its dotted key, what is wrong and the fix (`study.define.schema` turns it into the
`RetinaError` that names the file).

    top = Section(doc, "", ["name", "data"], children={"data": ["path", "image_size"]})
    top.text("name"); top.section("data", REQUIRED).int("image_size", lo=1)
    top.section("search").build(SearchConfig)   # every field by its type, default and rule
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from study.define.overrides import Problem, show, unknown_key
from study.define.values import number as as_number

REQUIRED = object()  # a getter's default: the key must be there


class Section:
    """A mapping of the document at `prefix`, with typed getters that raise `Problem`s;
    `children`: the keys allowed in each of its sub-mappings, by name."""

    def __init__(
        self, raw: Any, prefix: str, allowed: Sequence[str],
        children: Mapping[str, Sequence[str]] | None = None,
    ):  # fmt: skip
        if not isinstance(raw, dict):
            fix = f"write {prefix or 'the document'} as keys and values: {', '.join(allowed)}"
            raise Problem(prefix, f"expected a mapping, got {show(raw)}", fix)
        for key in raw:
            if key not in allowed:
                raise unknown_key(prefix, key, allowed)
        self.raw, self.prefix, self.children = raw, prefix, children or {}

    def section(self, name: str, default: Any = None) -> Section:
        raw = self.get(name, {} if default is None else default)
        return Section(raw, name, list(self.children[name]))

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, default: Any) -> Any:
        if name not in self.raw:
            if default is REQUIRED:
                raise Problem(self.key(name), "missing", "add it (see search_spaces/demo.yaml)")
            return default
        return self.raw[name]

    def int(self, name: str, default: Any = REQUIRED, lo: int = 0, hi: int | None = None) -> int:
        value, key = self.get(name, default), self.key(name)
        if not isinstance(value, int) or isinstance(value, bool):
            fix = f"write a whole number >= {lo}"
            raise Problem(key, f"expected an integer, got {show(value)}", fix)
        if value < lo or (hi is not None and value > hi):
            span = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise Problem(key, f"must be {span}, got {show(value)}", "change the value")
        return value

    def float(self, name: str, default: Any = REQUIRED, **bounds: float) -> float:
        """A finite number; `bounds` are gt=, ge=, lt=, le= limits."""
        value, key = self.get(name, default), self.key(name)
        number = as_number(value)
        if number is None:
            fix = "write a number or auto" if name == "gpu" else "write a finite number, e.g. 0.5"
            raise Problem(key, f"expected a number, got {show(value)}", fix)
        ops = {"gt": (">", number.__gt__), "ge": (">=", number.__ge__), "lt": ("<", number.__lt__),
               "le": ("<=", number.__le__)}  # fmt: skip
        if not all(ops[op][1](bound) for op, bound in bounds.items()):
            span = " and ".join(f"{ops[op][0]} {bound}" for op, bound in bounds.items())
            raise Problem(key, f"must be {span}, got {show(value)}", "change the value")
        return number

    def bool(self, name: str, default: Any = REQUIRED) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            fix = "write true or false"
            raise Problem(self.key(name), f"expected true or false, got {show(value)}", fix)
        return value

    def text(self, name: str, default: Any = REQUIRED, choices: Sequence[str] = ()) -> str:
        value, key = self.get(name, default), self.key(name)
        if not isinstance(value, str) or not value.strip():
            example = choices[0] if choices else {"name": "demo"}.get(name, "data/demo")
            raise Problem(key, f"expected text, got {show(value)}", f"write e.g. {example}")
        if choices and value not in choices:
            fix = f"choose one of {', '.join(choices)}"
            raise Problem(key, f"unknown value {show(value)}", fix)
        return value

    def build(self, cls: type, **given: Any) -> Any:
        """`cls` from this mapping: each field not in `given` is read by its type with the default
        and rule of its `study.define.config.key` (a field of another type must be given)."""
        hints = typing.get_type_hints(cls)
        values = dict(given)
        for f in dataclasses.fields(cls):
            if f.name in values:
                continue
            default = REQUIRED if f.default is dataclasses.MISSING else f.default
            rule = {k: v for k, v in f.metadata.items() if k not in ("doc", "verbatim")}
            read = _READERS.get(hints[f.name])
            if read is None:  # a programming error: the parser must read this key by hand
                raise TypeError(f"{cls.__name__}.{f.name}: {hints[f.name]} needs its own reader")
            values[f.name] = read(self, f.name, default, **rule)
        return cls(**values)


_READERS = {
    int: Section.int,
    float: Section.float,
    bool: Section.bool,
    str: lambda section, name, default, choices=(): section.text(name, default, choices),
}
