"""Read a dataset folder into a `Manifest`: image ids, grades 0-4, patients and image files.

The layout is detected from the folder's files (or forced: `read_manifest(folder, "idrid")`,
a study's `data.layout`); docs/data-layouts.md has the table. Two are read here:
- Kaggle EyePACS (`kaggle`): `trainLabels.csv` (header `image,level`, extra columns allowed) and
  the images as `<image>.jpeg` in `train/` or in the folder itself.
- Course lab (`lab`): `train_img.csv`, `train_label.csv`, `test_img.csv`, `test_label.csv`, one
  name or one label per line and NO header, and the images in `data/`, `images/`, `train/`,
  `test/`, `img/` or the folder itself.
and the public DR datasets by their readers in `retina.layouts` (APTOS 2019, Messidor-2, IDRiD,
DDR). Ungradable images (DDR's grade 5, Messidor-2's `adjudicated_gradable` 0) are left out and
counted in `Manifest.ungradable`. Every problem a user can cause raises one `RetinaError` naming
the file, line and fix; a folder of no layout gets one message listing what each one needs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retina.errors import RetinaError
from retina.layouts import LAYOUT_NAMES, READERS
from retina.layouts.common import Problems, Read, parse_grade, read_lines
from retina.patients import patient_of_id

KAGGLE_CSV = "trainLabels.csv"
LAB_CSVS = ("train_img.csv", "train_label.csv", "test_img.csv", "test_label.csv")
KAGGLE_IMAGE_DIRS = ("train", ".")
LAB_IMAGE_DIRS = ("data", "images", "train", "test", "img", ".")
# Names may come with or without an extension; copies made on Windows often upper-case it.
SUFFIXES = (".jpeg", ".jpg", ".JPEG", ".JPG")
LAB_NEEDS = f"course lab: {', '.join(LAB_CSVS)} (one name or label per line, no header)"
KAGGLE_NEEDS = f"Kaggle EyePACS: {KAGGLE_CSV} (image,level) and the images in train/"


@dataclass(frozen=True, eq=False)
class Manifest:
    root: Path  # the data folder given by the user (resolved)
    layout: str  # one of retina.layouts.LAYOUT_NAMES
    image_ids: tuple[str, ...]
    labels: np.ndarray  # int64 [N], 0..4
    patient_ids: tuple[str, ...]  # the layout's patients; else the image id (its own patient)
    paths: tuple[Path, ...]  # resolved image files, inside the image folder
    # The dataset's own split per image ("train"/"val"/"test"): the lab's, IDRiD's, DDR's.
    given_split: tuple[str, ...] | None
    ungradable: tuple[str, ...] = ()  # ids the dataset grades ungradable: left out, counted
    notes: tuple[str, ...] = ()  # what the data summary says about this layout (patients)

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


def read_manifest(folder: str | Path, layout: str = "auto") -> Manifest:
    """Detect the layout of `folder` (or read it as `layout`), read its label files and check
    every listed image exists inside it."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise RetinaError(f"data folder {root} {what}; pass the folder that holds the label CSV(s)")
    root = root.resolve()
    layout = _detect_layout(root, layout)
    problems = Problems()
    if layout in READERS:
        return _manifest(root, layout, READERS[layout].read(root, problems), problems)
    if layout == "kaggle":
        groups = [(_read_kaggle(root, problems), KAGGLE_IMAGE_DIRS, KAGGLE_CSV)]
    else:
        groups = [
            (_read_lab(root, part, problems), LAB_IMAGE_DIRS, f"{part}_img.csv")
            for part in ("train", "test")
        ]
    read = Read(given=[] if layout == "lab" else None)
    for entries, dirs, csv_name in groups:
        image_dir = _find_image_dir(root, [e.name for e in entries], dirs, csv_name)
        listing = {e.name: e for e in os.scandir(image_dir)}
        for e in entries:
            image_id, path = _resolve(e, image_dir, listing, problems)
            read.add(image_id, e.label, e.where, patient_of_id(image_id), path)
            if read.given is not None:
                read.given.append(str(e.given))
            if parse_grade(e.label) is None:
                # The lab's files have no header; a header line left in them lands here.
                hint = " (a header? these files have none)" if e.label_where.endswith(" 1") else ""
                problems.add("label", f"{e.label_where}: {e.label!r}{hint}")
    return _manifest(root, layout, read, problems, labels_checked=True)


def _manifest(
    root: Path, layout: str, read: Read, problems: Problems, labels_checked: bool = False
) -> Manifest:
    """The manifest of what a reader found: grades parsed, duplicates found, problems raised."""
    labels = [parse_grade(text) for text in read.labels]
    seen: dict[str, list[str]] = {}
    for image_id, where, label, text in zip(
        read.ids, read.wheres, labels, read.labels, strict=True
    ):
        seen.setdefault(image_id, []).append(where)
        if label is None and not labels_checked:
            problems.add("label", f"{where}: {text!r}")
    for image_id, places in seen.items():
        if len(places) > 1:
            problems.add("duplicate", f"{image_id}: " + ", ".join(places))
    problems.raise_if_any(root)
    return Manifest(
        root=root,
        layout=layout,
        image_ids=tuple(read.ids),
        labels=np.asarray([-1 if g is None else g for g in labels], dtype=np.int64),
        patient_ids=tuple(read.patients),
        paths=tuple(read.paths),
        given_split=tuple(read.given) if read.given is not None else None,
        ungradable=tuple(read.ungradable),
        notes=tuple(read.notes),
    )


def found_layouts(root: Path) -> dict[str, str]:
    """Layout name -> the files that show it, for every layout whose files are in `root`."""
    out = {}
    if (root / KAGGLE_CSV).is_file():
        out["kaggle"] = KAGGLE_CSV
    if lab := [n for n in LAB_CSVS if (root / n).is_file()]:
        out["lab"] = ", ".join(lab)
    for name, reader in READERS.items():
        if reader.found(root):
            out[name] = reader.NEEDS.split(": ", 1)[1].split(" (")[0]
    return out


def _detect_layout(root: Path, forced: str = "auto") -> str:
    if forced not in ("auto", *LAYOUT_NAMES):
        raise RetinaError(
            f"unknown layout {forced!r}; use auto or one of {', '.join(LAYOUT_NAMES)}"
        )
    present = found_layouts(root)
    if forced != "auto":
        if forced not in present:
            raise RetinaError(
                f"{root} is not in the {forced} layout, which needs {_needs()[forced]}; "
                f"point at such a folder, or let the layout be detected (layout: auto)"
            )
        present = {forced: present[forced]}
    if len(present) > 1:
        shown = [f"{_TITLES.get(n, n)} layout ({files})" for n, files in present.items()]
        both = "both " + " and ".join(shown) if len(shown) == 2 else ", ".join(shown)
        raise RetinaError(
            f"{root} holds {both}; move one of them to its own folder and point at that folder, "
            f"or name the one to read (data.layout: {' | '.join(present)})"
        )
    if present:
        layout = next(iter(present))
        lab = [n for n in LAB_CSVS if (root / n).is_file()]
        if layout == "lab" and len(lab) < len(LAB_CSVS):
            missing = [n for n in LAB_CSVS if n not in lab]
            raise RetinaError(
                f"{root} holds a course-lab layout but lacks {', '.join(missing)}; the lab layout "
                f"needs all of {', '.join(LAB_CSVS)} (one name or label per line, no header)"
            )
        return layout
    csvs = sorted(p.name for p in root.glob("*.csv"))
    nested = sorted(
        {str(p.relative_to(root)) for p in root.iterdir() if p.is_dir() and found_layouts(p)}
    )
    hint = f"CSV files there: {', '.join(csvs[:10])}" if csvs else "it holds no CSV file"
    if nested:
        hint += f"; a dataset seems to be in the subfolder(s) {', '.join(nested)}: point at it"
    needs = "\n".join(f"  {line}" for line in _needs().values())
    raise RetinaError(
        f"no dataset found in {root} ({hint}). Each layout needs:\n{needs}\nFix: point at the "
        "folder holding one of them, or make demo data with `python -m retina.synthetic --out DIR`"
    )


_TITLES = {"kaggle": "Kaggle", "lab": "course-lab"}


def _needs() -> dict[str, str]:
    return {"kaggle": KAGGLE_NEEDS, "lab": LAB_NEEDS} | {n: r.NEEDS for n, r in READERS.items()}


def _read_kaggle(root: Path, problems: Problems) -> list[_Entry]:
    path = root / KAGGLE_CSV
    lines = read_lines(path)
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


def _read_lab(root: Path, part: str, problems: Problems) -> list[_Entry]:
    img_csv, label_csv = f"{part}_img.csv", f"{part}_label.csv"
    # Every line is data: the course's loader read these with a header row and silently lost
    # the first image of each file.
    names, labels = read_lines(root / img_csv), read_lines(root / label_csv)
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


def _resolve(entry: _Entry, image_dir: Path, listing: dict, problems: Problems) -> tuple[str, Path]:
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
