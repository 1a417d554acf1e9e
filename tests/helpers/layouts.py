"""Dataset folders in the public DR datasets' published layouts, with their real file types and
quirks, drawn by `retina.synthetic.render_fundus` (tiny, fast): one writer per layout.

- `aptos`: train.csv `id_code,diagnosis` and train_images/<id_code>.png (PNG files);
- `messidor2`: messidor_data.csv (image_id with its extension, the four adjudicated columns;
  ungradable rows have empty grades and adjudicated_gradable 0), IMAGES/ with .png, .JPG (named
  .jpg in the CSV, as the Kaggle file names the ADCIS images) and .tif files, and optionally
  ADCIS's messidor-2.csv (`left;right`);
- `idrid`: B. Disease Grading/ with the two label CSVs (header `...,Risk of macular edema `
  with its trailing space, empty trailing columns, a trailing row of empty fields) and the JPEGs,
  the numbering restarting in the testing set;
- `ddr`: DR_grading/{train,valid,test}.txt (`name grade`, 5 = ungradable) and the JPEGs.
Each returns the folder; the grades are the caller's, so a test knows what to expect.
"""

from __future__ import annotations

from pathlib import Path

from retina.synthetic import Eye, render_fundus

SIZE = 40  # px: enough for the crop to find the fundus, small enough to write in milliseconds


def picture(path: Path, grade: int, index: int, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    render_fundus(Eye(index, index, "right", grade), SIZE, seed=0).save(path, format=fmt)


def aptos(root: Path, grades: list[int]) -> Path:
    ids = [f"{index:04x}c1434d8d7" for index in range(len(grades))]
    for index, (image_id, grade) in enumerate(zip(ids, grades, strict=True)):
        picture(root / "train_images" / f"{image_id}.png", grade, index, "PNG")
    rows = "".join(f"{i},{g}\n" for i, g in zip(ids, grades, strict=True))
    (root / "train.csv").write_text("id_code,diagnosis\n" + rows)
    return root


# Messidor-2's three kinds of file: (file name, the name messidor_data.csv gives, PIL format).
def _messidor_file(index: int) -> tuple[str, str, str]:
    kind = index % 3
    if kind == 0:
        name = f"20051020_{43808 + index}_0100_PP.png"
        return name, name, "PNG"
    if kind == 1:
        return f"IM00{2385 + index}.JPG", f"IM00{2385 + index}.jpg", "JPEG"
    name = f"20060412_{58000 + index}_0200_PP.tif"
    return name, name, "TIFF"


def messidor2(root: Path, grades: list[int | None], *, pairs: bool = True) -> Path:
    """`grades`: None for an image graded ungradable. With `pairs`, images 2k and 2k+1 are one
    exam in messidor-2.csv."""
    rows, listed = [], []
    for index, grade in enumerate(grades):
        file, listed_name, fmt = _messidor_file(index)
        picture(root / "IMAGES" / file, grade or 0, index, fmt)
        listed.append(listed_name)
        if grade is None:
            rows.append(f"{listed_name},,,0\n")
        else:
            rows.append(f"{listed_name},{grade},{int(grade >= 3)},1\n")
    header = "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable\n"
    (root / "messidor_data.csv").write_text(header + "".join(rows))
    if pairs:
        exams = [f"{listed[k]};{listed[k + 1]}\r\n" for k in range(0, len(listed) - 1, 2)]
        (root / "messidor-2.csv").write_text("left;right\r\n" + "".join(exams))
    return root


IDRID = "B. Disease Grading"
IDRID_LABELS = {
    "a. Training Set": "a. IDRiD_Disease Grading_Training Labels.csv",
    "b. Testing Set": "b. IDRiD_Disease Grading_Testing Labels.csv",
}


def idrid(root: Path, train: list[int], test: list[int]) -> Path:
    base = root / IDRID
    index = 0
    for (images, labels), grades in zip(IDRID_LABELS.items(), (train, test), strict=True):
        rows = []
        for k, grade in enumerate(grades, start=1):  # numbering restarts in each set
            name = f"IDRiD_{k:03d}"
            picture(base / "1. Original Images" / images / f"{name}.jpg", grade, index, "JPEG")
            rows.append(f"{name},{grade},{min(grade, 2)},,,,,,,,\n")
            index += 1
        header = "Image name,Retinopathy grade,Risk of macular edema ,,,,,,,,\n"
        path = base / "2. Groundtruths" / labels
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + "".join(rows) + ",,,,,,,,,,\n")
    return root


def ddr(root: Path, parts: dict[str, list[int]]) -> Path:
    """`parts`: {"train"|"valid"|"test": grades}, 5 for an ungradable image."""
    index = 0
    for part, grades in parts.items():
        lines = []
        for grade in grades:
            name = f"007-{index:04d}-000.jpg"
            picture(root / "DR_grading" / part / name, min(grade, 4), index, "JPEG")
            lines.append(f"{name} {grade}\n")
            index += 1
        (root / "DR_grading" / f"{part}.txt").write_text("".join(lines))
    return root
