"""Read a dataset folder into a `Manifest`: image ids, grades 0-4, patients and image files.

Two layouts are detected from the folder's files:
- Kaggle EyePACS: `trainLabels.csv` (header `image,level`, extra columns allowed) and the images
  as `<image>.jpeg` in `train/` or in the folder itself.
- Course lab: `train_img.csv`, `train_label.csv`, `test_img.csv`, `test_label.csv`, one name or
  one label per line and NO header, and the images in `data/`, `images/`, `train/`, `test/`,
  `img/` or the folder itself.
Every problem a user can cause raises one `RetinaError` naming the file, line and fix.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retina.errors import RetinaError
from retina.patients import patient_of_id

KAGGLE_CSV = "trainLabels.csv"
LAB_CSVS = ("train_img.csv", "train_label.csv", "test_img.csv", "test_label.csv")
KAGGLE_IMAGE_DIRS = ("train", ".")
LAB_IMAGE_DIRS = ("data", "images", "train", "test", "img", ".")
# Names may come with or without an extension; copies made on Windows often upper-case it.
SUFFIXES = (".jpeg", ".jpg", ".JPEG", ".JPG")
MAX_LISTED = 20
# "2.0" is accepted as grade 2: spreadsheets export integer columns that way and no information is
# lost. "2.5", "mild", "-1" or "7" are rejected.
_GRADE = re.compile(r"^[+-]?\d+(\.0*)?$")
# Each kind of problem: what is wrong, and the fix.
_KINDS = {
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


@dataclass(frozen=True, eq=False)
class Manifest:
    root: Path  # the data folder given by the user (resolved)
    layout: str  # "kaggle" | "lab"
    image_ids: tuple[str, ...]
    labels: np.ndarray  # int64 [N], 0..4
    patient_ids: tuple[str, ...]  # "<patient>" from "<patient>_left"/"_right"; else the image id
    paths: tuple[Path, ...]  # resolved image files, inside the image folder
    given_split: tuple[str, ...] | None  # lab layout: "train"/"test" per image; kaggle: None

    def __len__(self) -> int:
        return len(self.image_ids)

    def content_hash(self) -> str:
        """sha256 over ids, labels, patients, given split and each file's size + mtime_ns."""
        # stat only, never a read: 35k images hash in well under a second, and replacing or
        # touching a file still changes the hash (and so the cache key).
        digest = hashlib.sha256()
        for i, path in enumerate(self.paths):
            try:
                st = os.stat(path)
            except OSError as exc:  # the file went away after the dataset was read
                raise RetinaError(f"{path}: {exc.strerror}; restore it or run again") from None
            given = self.given_split[i] if self.given_split is not None else None
            record = [self.image_ids[i], int(self.labels[i]), self.patient_ids[i], given]
            digest.update(json.dumps(record + [st.st_size, st.st_mtime_ns]).encode() + b"\n")
        return digest.hexdigest()


@dataclass
class _Entry:
    name: str  # as written in the CSV
    label: str
    where: str  # "trainLabels.csv line 3"
    label_where: str  # where the label is: the same line, or the lab's label file
    given: str | None


class _Problems:
    """Collects problems by kind so that one error lists all of them, not the first only."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = {}

    def add(self, kind: str, text: str) -> None:
        self.by_kind.setdefault(kind, []).append(text)

    def raise_if_any(self, root: Path) -> None:
        if not self.by_kind:
            return
        sections = []
        for kind, (what, fix) in _KINDS.items():
            items = self.by_kind.get(kind, [])
            if not items:
                continue
            shown = [f"  {t}" for t in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                shown.append(f"  ... and {len(items) - MAX_LISTED} more")
            sections.append(f"{what} ({len(items)}):\n" + "\n".join(shown) + f"\n  fix: {fix}")
        raise RetinaError(f"bad dataset in {root}:\n" + "\n".join(sections))


def read_manifest(folder: str | Path) -> Manifest:
    """Detect the layout of `folder`, read its CSVs and check every listed image exists inside it."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise RetinaError(f"data folder {root} {what}; pass the folder that holds the label CSV(s)")
    root = root.resolve()
    layout = _detect_layout(root)
    problems = _Problems()
    if layout == "kaggle":
        groups = [(_read_kaggle(root, problems), KAGGLE_IMAGE_DIRS, KAGGLE_CSV)]
    else:
        groups = [
            (_read_lab(root, part, problems), LAB_IMAGE_DIRS, f"{part}_img.csv")
            for part in ("train", "test")
        ]
    ids, labels, patients, paths, given = [], [], [], [], []
    seen: dict[str, list[str]] = {}
    for entries, dirs, csv_name in groups:
        image_dir = _find_image_dir(root, [e.name for e in entries], dirs, csv_name)
        listing = {e.name: e for e in os.scandir(image_dir)}
        for e in entries:
            label = _parse_grade(e.label)
            if label is None:
                # The lab's files have no header; a header line left in them lands here.
                hint = " (a header? these files have none)" if e.label_where.endswith(" 1") else ""
                problems.add("label", f"{e.label_where}: {e.label!r}{hint}")
            image_id, path = _resolve(e, image_dir, listing, problems)
            seen.setdefault(image_id, []).append(e.where)
            ids.append(image_id)
            labels.append(-1 if label is None else label)
            patients.append(patient_of_id(image_id))  # the rule is retina.patients'
            paths.append(path)
            given.append(e.given)
    for image_id, places in seen.items():
        if len(places) > 1:
            problems.add("duplicate", f"{image_id}: " + ", ".join(places))
    problems.raise_if_any(root)
    return Manifest(
        root=root,
        layout=layout,
        image_ids=tuple(ids),
        labels=np.asarray(labels, dtype=np.int64),
        patient_ids=tuple(patients),
        paths=tuple(paths),
        given_split=tuple(given) if layout == "lab" else None,
    )


def _detect_layout(root: Path) -> str:
    kaggle = (root / KAGGLE_CSV).is_file()
    lab = [n for n in LAB_CSVS if (root / n).is_file()]
    if kaggle and lab:
        raise RetinaError(
            f"{root} holds both a Kaggle layout ({KAGGLE_CSV}) and a course-lab layout "
            f"({', '.join(lab)}); move one of them to its own folder and point at that folder"
        )
    if kaggle:
        return "kaggle"
    if lab:
        missing = [n for n in LAB_CSVS if n not in lab]
        if missing:
            raise RetinaError(
                f"{root} holds a course-lab layout but lacks {', '.join(missing)}; the lab layout "
                f"needs all of {', '.join(LAB_CSVS)} (one name or label per line, no header)"
            )
        return "lab"
    csvs = sorted(p.name for p in root.glob("*.csv"))
    nested = sorted(
        str(p.parent.relative_to(root))
        for name in (KAGGLE_CSV, LAB_CSVS[0])
        for p in root.glob(f"*/{name}")
    )
    hint = f"; CSV files there: {', '.join(csvs[:10])}" if csvs else "; it holds no CSV file"
    if nested:
        hint += f"; a dataset seems to be in the subfolder(s) {', '.join(nested)}: point at it"
    raise RetinaError(
        f"no dataset found in {root}: looked for {KAGGLE_CSV} (Kaggle EyePACS layout) and for "
        f"{', '.join(LAB_CSVS)} (course-lab layout){hint}. Fix: point at the folder holding them, "
        "or make demo data with `python -m retina.synthetic --out DIR`"
    )


def _read_lines(path: Path) -> list[str]:
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


def _read_kaggle(root: Path, problems: _Problems) -> list[_Entry]:
    path = root / KAGGLE_CSV
    lines = _read_lines(path)
    if not lines:
        raise RetinaError(f"{path} is empty; it needs a header `image,level` and a row per image")
    rows = list(csv.reader(lines))
    header = [c.strip().lower() for c in rows[0]]
    if "image" not in header or "level" not in header:
        raise RetinaError(
            f"{path} line 1: the header has the columns {rows[0]}, expected the header "
            "`image,level` (extra columns are allowed); add or rename the missing column(s)"
        )
    col_image, col_level = header.index("image"), header.index("level")
    entries = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue  # a blank line between rows carries nothing and misaligns nothing here
        where = f"{KAGGLE_CSV} line {lineno}"
        if len(row) <= max(col_image, col_level):
            problems.add("fields", f"{where}: {len(row)} field(s), the header has {len(header)}")
            continue
        entries.append(_Entry(row[col_image].strip(), row[col_level].strip(), where, where, None))
    if not entries and not problems.by_kind:
        raise RetinaError(f"{path} has a header but no rows; add a row `<image>,<level>` per image")
    return entries


def _read_lab(root: Path, part: str, problems: _Problems) -> list[_Entry]:
    img_csv, label_csv = f"{part}_img.csv", f"{part}_label.csv"
    # Every line is data: the course's loader read these with a header row and silently lost
    # the first image of each file.
    names, labels = _read_lines(root / img_csv), _read_lines(root / label_csv)
    for name, lines, what in ((img_csv, names, "image name"), (label_csv, labels, "label")):
        if not lines:
            raise RetinaError(f"{root / name} is empty; it needs one {what} per line (no header)")
        for lineno, line in enumerate(lines, start=1):
            if not line:
                problems.add("blank", f"{name} line {lineno}")
    if len(names) != len(labels):
        problems.add("length", f"{img_csv} has {len(names)} lines, {label_csv} has {len(labels)}")
    return [
        _Entry(name, label, f"{img_csv} line {i}", f"{label_csv} line {i}", part)
        for i, (name, label) in enumerate(zip(names, labels, strict=False), start=1)
        if name and label
    ]


def _parse_grade(text: str) -> int | None:
    if not _GRADE.match(text):
        return None
    grade = int(float(text))
    return grade if 0 <= grade <= 4 else None


def _candidates(name: str) -> list[str]:
    if name.lower().endswith((".jpeg", ".jpg")):
        return [name]
    return [name + suffix for suffix in SUFFIXES]


def _find_image_dir(root: Path, names: list[str], dirs: tuple[str, ...], csv_name: str) -> Path:
    """The candidate folder holding most of the listed images (ties: the earlier candidate)."""
    best, best_hits = None, 0
    for sub in dirs:
        folder = root / sub
        if not folder.is_dir():
            continue
        try:
            present = set(os.listdir(folder))
        except OSError as exc:
            raise RetinaError(f"cannot list {folder}: {exc.strerror}; make it readable") from None
        hits = sum(
            any(c in present or ("/" in c and os.path.lexists(folder / c)) for c in _candidates(n))
            for n in names
        )
        if hits > best_hits:
            best, best_hits = folder, hits
    if best is None:
        looked = ", ".join(str(root / d) for d in dirs)
        raise RetinaError(
            f"none of the {len(names)} images listed in {csv_name} was found; looked in {looked} "
            f"(for <name>.jpeg). Fix: put the images in {root / dirs[0]}"
        )
    return best.resolve()


def _resolve(
    entry: _Entry, image_dir: Path, listing: dict, problems: _Problems
) -> tuple[str, Path]:
    """The image id and resolved file of one entry; problems recorded (with a placeholder path)."""
    name = entry.name.replace("\\", "/")
    image_id = re.sub(r"\.(jpe?g)$", "", name, flags=re.IGNORECASE)
    # Backslashes count as separators: a CSV written on Windows may say "..\\x" or "C:\\x".
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in name.split("/"):
        problems.add("escape", f"{entry.where}: {entry.name!r}")
        return image_id, image_dir
    for candidate in _candidates(name):
        path = image_dir / candidate
        if "/" in candidate:  # a subfolder, which may itself be a link
            if not os.path.lexists(path):
                continue
            linked = True
        else:
            found = listing.get(candidate)
            if found is None:
                continue
            linked = found.is_symlink()
        if linked:
            path = path.resolve()  # follow links so that the check below sees the real file
            if not path.is_relative_to(image_dir):
                problems.add("escape", f"{entry.where}: {entry.name!r} resolves to {path}")
                return image_id, image_dir
        if path.is_file() if linked else found.is_file():  # DirEntry: no extra stat
            return image_id, path
    problems.add(
        "missing", f"{entry.where}: {name} (looked for {_candidates(name)[0]} in {image_dir})"
    )
    return image_id, image_dir
