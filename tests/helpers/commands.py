"""What the documentation and the error messages tell a user to type, and whether it parses.

`documented_commands` reads the `python -m ...` and `make ...` commands out of Markdown (fenced
blocks and inline code); `message_suggestions` reads the flags and `--set` keys out of the
messages in the sources (RetinaError, schema problems, prints, log lines). `problem` checks a
command without running its work: the module exists, its `parse_args(argv)` accepts the
arguments (a study space is loaded with its `--set` items too), the make target exists.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.cli import ROOT

PYTHON_PREFIXES = ("python -m ", ".venv/bin/python -m ", "python3 -m ")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"`([^`\n]+)`")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
SET_KEY = re.compile(r"--set[ =]([a-z_][a-z0-9_.]*)=")
OPTION_LINE = re.compile(r"^\s{2}(?:-\w[ ,]+)?(--[a-z][a-z0-9-]*)")
# A placeholder a reader replaces (DIR, N, PX, URI, HOST, <study>): any value parses as text,
# and "1" also parses where the flag wants a number.
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|^<[^>]+>$")
SPACE_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*\.yaml$")  # SPACE.yaml: any space, the demo's
IN_MESSAGE = re.compile(r"python -m ([\w.]+)([^;`\n)]*)")  # a command inside a message
MAIN_GUARD = re.compile(r'^if __name__ == "__main__":', re.M)
MESSAGE_CALLS = {"RetinaError", "Problem", "print", "warning", "warn", "error", "info"}
MESSAGE_NAMES = {"fix", "hint", "what", "message", "msg", "advice"}


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    text: str


def _fenced_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    inside, pending, start = False, "", 0
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def _is_command(text: str) -> bool:
    text = text.strip().removeprefix("$ ")
    return text.startswith(PYTHON_PREFIXES) or text.startswith("make ") or text == "make"


def documented_commands(path: Path) -> list[Command]:
    """Every `python -m` and `make` command in a Markdown file, each with its file and line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    found = [Command(f"{name}:{n}", text) for n, text in _fenced_lines(lines) if _is_command(text)]
    inside = False
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            found += [
                Command(f"{name}:{number}", span)
                for span in INLINE.findall(line)
                if _is_command(span)
            ]
    return found


def _words(text: str) -> list[str]:
    text = re.sub(r"\s#.*$", "", text.strip().removeprefix("$ "))  # a trailing comment
    text = re.split(r"\s(?:\||&&|;|>|2>)\s", text)[0]  # the first command of a pipeline
    words = []
    for word in shlex.split(text.replace("[", " ").replace("]", " ")):  # [--optional] parts
        if SPACE_PLACEHOLDER.match(word):
            word = "search_spaces/demo.yaml"
        words.append("1" if PLACEHOLDER.match(word) else word.replace("<study>", "demo"))
    return words


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    targets = set()
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\- ]+):(?!=)", line)
        if match and not line.startswith((".", "\t")):
            targets.update(match.group(1).split())
    return targets


def _module(name: str):
    """The module `python -m name` runs (a package's __main__), or None when there is none."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # no such package, or not a module name at all
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations is not None:  # a package: python -m runs its __main__
        name += ".__main__"
    return importlib.import_module(name)


def parse(module_name: str, argv: list[str]):
    """`module.parse_args(argv)`; raises AssertionError with argparse's own complaint."""
    module = _module(module_name)
    if module is None:
        raise AssertionError(f"no module {module_name}")
    parse_args = getattr(module, "parse_args", None)
    if parse_args is None:
        raise AssertionError(f"{module_name} has no parse_args(argv) to check its flags with")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return None
        raise AssertionError(err.getvalue().strip().splitlines()[-1]) from None


def options(module_name: str) -> set[str]:
    """The flags a command accepts, read from its --help (argparse's public output)."""
    module = _module(module_name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        module.parse_args(["--help"])
    return {m.group(1) for line in out.getvalue().splitlines() if (m := OPTION_LINE.match(line))}


def problem(command: str) -> str | None:
    """Why `command` would not parse, or None. Runs no work: parsing and loading only."""
    words = _words(command)
    if words and words[0] == "make":
        missing = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
        unknown = [t for t in missing if t not in makefile_targets()]
        return f"no make target {', '.join(unknown)}" if unknown else None
    if len(words) < 3 or words[1] != "-m":
        return "not a `python -m MODULE` command"
    module, argv = words[2], words[3:]
    if not argv:  # a command named in prose: the module must exist
        return None if _module(module) is not None else f"no module {module}"
    try:
        args = parse(module, argv)
        if module == "study.sweep" and args is not None:
            check_sweep(args)
    except AssertionError as exc:
        return str(exc)
    return None


def check_sweep(args) -> None:
    """A documented study loads with its --set items (keys and values checked by the schema)."""
    from retina.errors import RetinaError
    from study.sweep import load

    space = Path(args.space)
    if not space.is_absolute():
        space = ROOT / space
    if not space.is_file():
        raise AssertionError(f"no search space {args.space}")
    args.space = str(space)
    try:
        load(args)
    except RetinaError as exc:
        raise AssertionError(str(exc)) from None


def set_key_problem(key: str) -> str | None:
    """Why `--set KEY=...` is refused as a key (its value is the schema's business), or None."""
    from study.define.overrides import Problem, parse_set
    from study.define.schema import KEYS

    try:
        parse_set(f"{key}=1", KEYS)
    except Problem as exc:
        return str(exc)
    return None


# ---- the messages in the sources ---------------------------------------------------------
def _strings(node: ast.AST) -> str:
    parts = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            parts.append(sub.value)
    return " ".join(parts)


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def message_texts(path: Path) -> list[str]:
    """The text of every message a source file can show a user (constant parts only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) in MESSAGE_CALLS:
            texts.append(_strings(node))
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in MESSAGE_NAMES for t in node.targets
        ):
            texts.append(_strings(node.value))
    return texts


def message_suggestions(path: Path) -> tuple[dict[str | None, set[str]], set[str]]:
    """({command or None: flags}, --set keys) that a source file's messages suggest: flags
    after `python -m X` in a message are X's, the others any command's the message reaches."""
    flags: dict[str | None, set[str]] = {}
    keys = set()
    for text in message_texts(path):
        keys.update(SET_KEY.findall(text))
        for module, rest in IN_MESSAGE.findall(text):
            flags.setdefault(module.rstrip("."), set()).update(FLAG.findall(rest))
        flags.setdefault(None, set()).update(FLAG.findall(IN_MESSAGE.sub("", text)))
    return {k: v for k, v in flags.items() if v}, keys


def cli_modules() -> list[str]:
    """Every `python -m` entry point of the project (a module with a __main__ guard)."""
    names = []
    for folder in ("retina", "study"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if MAIN_GUARD.search(text) and "argparse" in text:
                parts = path.relative_to(ROOT).with_suffix("").parts
                names.append(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
    return names
