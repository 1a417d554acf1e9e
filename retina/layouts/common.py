"""What every dataset layout reader shares: reading a label file, collecting problems, parsing a
grade, and finding a listed image in its folder (case and extension as the datasets ship them).

No command of its own: `retina.manifest.read_manifest` detects the layout and calls its reader.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from retina.errors import RetinaError

MAX_LISTED = 20
# "2.0" is accepted as grade 2: spreadsheets export integer columns that way and no information is
# lost. "2.5", "mild", "-1" or "7" are rejected.
_GRADE = re.compile(r"^[+-]?\d+(\.0*)?$")
# Image files the public datasets ship: APTOS .png, Messidor-2 .png/.JPG/.tif, IDRiD .jpg.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp")
# Each kind of problem: what is wrong, and the fix.
KINDS = {
    "fields": ("rows with too few fields", "give every row a value for each header column"),
    "blank": ("blank lines between rows", "delete them; line k of names matches line k of labels"),
    "length": ("name/label files of different lengths", "give one label per name, same order"),
    "label": ("labels that are not an integer grade 0-4", "use the ICDR grades 0, 1, 2, 3, 4"),
    "duplicate": ("duplicate image ids", "keep one row per image"),
    "escape": (
        "names that would leave the image folder",
        "use plain names, no '..'/absolute/links out",
    ),
    "missing": (
        "listed images not found",
        "copy the files into the image folder or delete their rows",
    ),
}


class Problems:
    """Collects problems by kind so that one error lists all of them, not the first only."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = {}

    def add(self, kind: str, text: str) -> None:
        self.by_kind.setdefault(kind, []).append(text)

    def raise_if_any(self, root: Path) -> None:
        if not self.by_kind:
            return
        sections = []
        for kind, (what, fix) in KINDS.items():
            items = self.by_kind.get(kind, [])
            if not items:
                continue
            shown = [f"  {t}" for t in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                shown.append(f"  ... and {len(items) - MAX_LISTED} more")
            sections.append(f"{what} ({len(items)}):\n" + "\n".join(shown) + f"\n  fix: {fix}")
        raise RetinaError(f"bad dataset in {root}:\n" + "\n".join(sections))


@dataclass
class Read:
    """What a layout reader found, row by row (the manifest checks grades and duplicates)."""

    ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # the grade as written
    wheres: list[str] = field(default_factory=list)  # "train.csv line 3"
    patients: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    given: list[str] | None = None  # the dataset's published split per row, if it has one
    ungradable: list[str] = field(default_factory=list)  # ids left out: graded ungradable
    notes: list[str] = field(default_factory=list)  # what the data summary says about it

    def add(self, image_id: str, label: str, where: str, patient: str, path: Path) -> None:
        self.ids.append(image_id)
        self.labels.append(label)
        self.wheres.append(where)
        self.patients.append(patient)
        self.paths.append(path)


def read_lines(path: Path) -> list[str]:
    """The stripped lines of a text file, blank trailing lines dropped; BOM and CRLF tolerated."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RetinaError(f"cannot read {path}: {exc.strerror}; make it a readable file") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Excel's "Unicode text" export.
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise RetinaError(f"{path}: bad UTF-16 at byte {exc.start}; save it as UTF-8") from None
    elif (nul := raw.find(b"\x00")) >= 0:
        raise RetinaError(
            f"{path} is not a text CSV: byte offset {nul} is a NUL byte (binary file, or UTF-16 "
            "without a byte-order mark); save it as UTF-8 CSV"
        )
    else:
        try:
            text = raw.decode("utf-8-sig")  # strips the BOM spreadsheets put in front
        except UnicodeDecodeError:
            # Not UTF-8: most likely an old spreadsheet's Western code page. latin-1 maps every
            # byte to a character, so the names are still read and compared with the files.
            text = raw.decode("latin-1")
    # Split on \r\n, \r and \n only: str.splitlines() would also split on \x85, a latin-1 byte.
    lines = [line.strip() for line in re.split(r"\r\n|\r|\n", text)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_table(path: Path, needed: tuple[str, ...], delimiter: str = ",") -> list[tuple[int, dict]]:
    """(line number, {stripped header: stripped value}) per non-blank row of a CSV whose header
    holds `needed` (compared stripped and case-blind: IDRiD's header ends in a space, and its
    rows in empty columns)."""
    lines = read_lines(path)
    if not lines:
        raise RetinaError(f"{path} is empty; it needs the header {delimiter.join(needed)}")
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [c.strip().lower() for c in rows[0]]
    missing = [n for n in needed if n.lower() not in header]
    if missing:
        raise RetinaError(
            f"{path} line 1: the header has the columns {rows[0]}, expected {list(needed)} "
            f"(missing {missing}); is this the file as the dataset publishes it?"
        )
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if any(c.strip() for c in row):  # blank lines and rows of empty columns carry nothing
            cells = dict(zip(header, (c.strip() for c in row), strict=False))
            out.append((lineno, {n: cells.get(n.lower(), "") for n in needed}))
    if not out:
        raise RetinaError(f"{path} has a header but no rows; it needs a row per image")
    return out


def parse_grade(text: str) -> int | None:
    if not _GRADE.match(text):
        return None
    grade = int(float(text))
    return grade if 0 <= grade <= 4 else None


def stem(name: str) -> str:
    """The name less an image suffix (any case): Messidor-2's `IM002385.JPG` -> `IM002385`."""
    base, dot, suffix = name.rpartition(".")
    return base if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES else name


class ImageFolder:
    """Finds a listed image in one folder: the name as written, the name in another case, or
    (a name without its suffix, or with another) the one image file of that stem."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            names = os.listdir(folder) if folder.is_dir() else []
        except OSError as exc:
            raise RetinaError(f"cannot list {folder}: {exc.strerror}; make it readable") from None
        self.names = set(names)
        self.lower = {n.lower(): n for n in names}
        self.stems: dict[str, list[str]] = {}
        for n in names:
            if stem(n) != n:
                self.stems.setdefault(stem(n).lower(), []).append(n)

    def count(self, names: list[str]) -> int:
        return sum(self.lookup(n) is not None for n in names)

    def lookup(self, name: str) -> str | None:
        if name in self.names:
            return name
        if name.lower() in self.lower:
            return self.lower[name.lower()]
        found = self.stems.get(stem(name).lower(), [])
        return found[0] if len(found) == 1 else None

    def resolve(self, name: str, where: str, problems: Problems) -> Path:
        """The resolved file of `name`; a problem (and the folder as placeholder) otherwise."""
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            problems.add("escape", f"{where}: {name!r}")
            return self.folder
        found = self.lookup(name)
        if found is None:
            problems.add("missing", f"{where}: {name} (looked in {self.folder})")
            return self.folder
        path = self.folder / found
        if path.is_symlink():
            path = path.resolve()  # follow links so that the check below sees the real file
            if not path.is_relative_to(self.folder.resolve()):
                problems.add("escape", f"{where}: {name!r} resolves to {path}")
                return self.folder
        return path


def best_folder(root: Path, candidates: tuple[str, ...], names: list[str]) -> ImageFolder:
    """The candidate folder (relative to root) holding most of `names`; ties: the earlier."""
    folders = [ImageFolder(root / c) for c in candidates]
    return max(folders, key=lambda f: (f.count(names), -folders.index(f)))
