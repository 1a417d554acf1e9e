"""APTOS 2019 Blindness Detection (Kaggle), as the competition publishes its training data:

    train.csv              header `id_code,diagnosis`, one row per image, grades 0-4
    train_images/<id_code>.png

APTOS publishes no patient ids (nor which eye), so each image is its own patient: the split
cannot keep a person's two eyes together, and the data summary says so. No published split
(its test.csv carries no grades). Read by `retina.manifest.read_manifest`.
"""

from __future__ import annotations

from pathlib import Path

from retina.layouts.common import Problems, Read, best_folder, read_table

NAME = "aptos"
TITLE = "APTOS 2019"
LABELS = "train.csv"
NEEDS = "APTOS 2019: train.csv (id_code,diagnosis) and train_images/<id_code>.png"
PUBLISHED = False  # its own train/test split: none with grades


def found(root: Path) -> bool:
    return (root / LABELS).is_file() and (root / "train_images").is_dir()


def read(root: Path, problems: Problems) -> Read:
    rows = read_table(root / LABELS, ("id_code", "diagnosis"))
    folder = best_folder(root, ("train_images", "."), [r["id_code"] for _, r in rows])
    out = Read()
    for lineno, row in rows:
        where = f"{LABELS} line {lineno}"
        name = row["id_code"]
        path = folder.resolve(name + ".png" if "." not in name else name, where, problems)
        out.add(name, row["diagnosis"], where, name, path)
    out.notes.append(
        "APTOS 2019 publishes no patient ids: each image is its own patient, so a person's "
        "two eyes may land on different sides of the split"
    )
    return out
