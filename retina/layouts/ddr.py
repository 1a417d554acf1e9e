"""DDR (Li et al. 2019, github.com/nkicsl/DDR-dataset), its DR grading part:

    DR_grading/train.txt, valid.txt, test.txt   one `name grade` line per image (space-separated)
    DR_grading/train/, valid/, test/            the images, e.g. 007-0004-000.jpg

Grades 0-4 are the ICDR grades; 5 marks an ungradable image, which is left out and counted
(never given a grade). No patient ids: each image is its own patient (said). The published
train/valid/test split is kept with `data.split: published`. The folder given may be the
dataset's root or `DR_grading/` itself. Read by `retina.manifest.read_manifest`.
"""

from __future__ import annotations

from pathlib import Path

from retina.layouts.common import Problems, Read, best_folder, read_lines

NAME = "ddr"
TITLE = "DDR"
PART = "DR_grading"
PARTS = {"train": "train", "valid": "val", "test": "test"}  # file stem -> our split name
UNGRADABLE = "5"
NEEDS = (
    "DDR: DR_grading/train.txt, valid.txt, test.txt (`name grade` lines, 5 = ungradable) "
    "and the images in DR_grading/train/, valid/, test/"
)
PUBLISHED = True


def base(root: Path) -> Path | None:
    for folder in (root / PART, root):
        if (folder / "train.txt").is_file() and (folder / "train").is_dir():
            return folder
    return None


def found(root: Path) -> bool:
    return base(root) is not None


def read(root: Path, problems: Problems) -> Read:
    folder = base(root)
    assert folder is not None, "read() after found()"
    out = Read(given=[])
    for part, split in PARTS.items():
        path = folder / f"{part}.txt"
        if not path.is_file():
            continue
        lines = [(i, line.split()) for i, line in enumerate(read_lines(path), start=1)]
        rows = [(i, f) for i, f in lines if f]
        images = best_folder(folder, (part,), [f[0] for _, f in rows])
        for lineno, fields in rows:
            where = f"{path.name} line {lineno}"
            if len(fields) != 2:
                problems.add("fields", f"{where}: {len(fields)} field(s), expected `name grade`")
                continue
            name, grade = fields
            image_id = name.rsplit(".", 1)[0]
            if grade == UNGRADABLE:
                out.ungradable.append(image_id)
                continue
            out.add(image_id, grade, where, image_id, images.resolve(name, where, problems))
            out.given.append(split)
    out.notes.append("DDR publishes no patient ids: each image is its own patient")
    return out
