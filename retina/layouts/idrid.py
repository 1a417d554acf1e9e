"""IDRiD, part B (disease grading), as IEEE DataPort publishes it:

    B. Disease Grading/
      1. Original Images/a. Training Set/IDRiD_001.jpg ... IDRiD_413.jpg
      1. Original Images/b. Testing Set/IDRiD_001.jpg ... IDRiD_103.jpg
      2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv
      2. Groundtruths/b. IDRiD_Disease Grading_Testing Labels.csv

The label files' header is `Image name,Retinopathy grade,Risk of macular edema ` (a trailing
space) followed by empty columns, and rows end in empty fields: columns are matched stripped and
empty ones ignored. The numbering restarts in the testing set, so the image ids are
`train/IDRiD_001` and `test/IDRiD_001`. No patient ids are published: each image is its own
patient (said). The published train/test split is kept with `data.split: published`. The folder
given may be the dataset's root, `B. Disease Grading/` or the one nested inside it (as some
archives unpack). Read by `retina.manifest.read_manifest`.
"""

from __future__ import annotations

from pathlib import Path

from retina.layouts.common import Problems, Read, best_folder, read_table

NAME = "idrid"
TITLE = "IDRiD disease grading"
PART = "B. Disease Grading"
TRUTHS = "2. Groundtruths"
PARTS = {
    "train": ("a. IDRiD_Disease Grading_Training Labels.csv", "a. Training Set"),
    "test": ("b. IDRiD_Disease Grading_Testing Labels.csv", "b. Testing Set"),
}
COLUMNS = ("Image name", "Retinopathy grade")
NEEDS = (
    f"IDRiD: {PART}/{TRUTHS}/{PARTS['train'][0]} (and b. ...Testing Labels.csv) with the images "
    f"in {PART}/1. Original Images/{PARTS['train'][1]}/ and {PARTS['test'][1]}/"
)
PUBLISHED = True


def base(root: Path) -> Path | None:
    """The folder holding `2. Groundtruths`: root, its `B. Disease Grading`, or one nested."""
    for folder in (root, root / PART, root / PART / PART):
        if (folder / TRUTHS / PARTS["train"][0]).is_file():
            return folder
    return None


def found(root: Path) -> bool:
    return base(root) is not None


def read(root: Path, problems: Problems) -> Read:
    folder = base(root)
    assert folder is not None, "read() after found()"
    out = Read(given=[])
    for part, (labels, images) in PARTS.items():
        path = folder / TRUTHS / labels
        if part == "test" and not path.is_file():
            continue  # the training half alone is still a dataset
        rows = read_table(path, COLUMNS)
        names = [r["Image name"] for _, r in rows]
        where_images = best_folder(folder, (f"1. Original Images/{images}",), names)
        for lineno, row in rows:
            where = f"{labels} line {lineno}"
            name = row["Image name"]
            image = where_images.resolve(name if "." in name else name + ".jpg", where, problems)
            image_id = f"{part}/{name}"
            out.add(image_id, row["Retinopathy grade"], where, image_id, image)
            out.given.append(part)
    out.notes.append(
        "IDRiD publishes no patient ids: each image is its own patient, so a person's two "
        "eyes may land on different sides of a patient-level split"
    )
    return out
