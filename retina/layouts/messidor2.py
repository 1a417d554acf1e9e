"""Messidor-2 with the adjudicated grades of Krause et al. 2018 (Kaggle
`google-brain/messidor2-dr-grades`), beside the images as ADCIS distributes them:

    messidor_data.csv      header `image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable`;
                           `image_id` is the file name (e.g. 20051020_43808_0100_PP.png, IM002385.jpg)
    IMAGES/                the 1748 photographs, .png, .JPG and .tif mixed (or images/, or beside)
    messidor-2.csv         optional (ADCIS): one exam per line, `left;right` image names

Images graded ungradable (`adjudicated_gradable` 0; they carry no DR grade) are left out and
counted. Patients: no rule on the file names pairs an exam's two eyes (ADCIS lists the pairs
in `messidor-2.csv` instead), so the exams come from that file when it is there, else each
image is its own patient (said). No published split. Read by `retina.manifest.read_manifest`.
"""

from __future__ import annotations

from pathlib import Path

from retina.layouts.common import Problems, Read, best_folder, read_lines, read_table, stem

NAME = "messidor2"
TITLE = "Messidor-2"
LABELS = "messidor_data.csv"
PAIRS = "messidor-2.csv"
COLUMNS = ("image_id", "adjudicated_dr_grade", "adjudicated_dme", "adjudicated_gradable")
NEEDS = (
    "Messidor-2: messidor_data.csv (image_id,adjudicated_dr_grade,adjudicated_dme,"
    "adjudicated_gradable) and the images in IMAGES/ (messidor-2.csv, if there, pairs the exams)"
)
PUBLISHED = False


def found(root: Path) -> bool:
    return (root / LABELS).is_file()


def exams(root: Path) -> dict[str, str]:
    """Image stem (lower case) -> its exam's patient id (the left image's stem), from
    messidor-2.csv's `left;right` lines; empty when the file is not there."""
    path = root / PAIRS
    if not path.is_file():
        return {}
    patient: dict[str, str] = {}
    for line in read_lines(path)[1:]:  # line 1 is the header `left;right`
        names = [stem(n.strip()) for n in line.split(";") if n.strip()]
        for name in names:
            patient[name.lower()] = names[0]
    return patient


def read(root: Path, problems: Problems) -> Read:
    rows = read_table(root / LABELS, COLUMNS)
    gradable = [(n, r) for n, r in rows if r["adjudicated_gradable"] not in ("0", "0.0")]
    folder = best_folder(root, ("IMAGES", "images", "."), [r["image_id"] for _, r in gradable])
    pairs = exams(root)
    out = Read()
    alone = 0
    for lineno, row in rows:
        image_id = stem(row["image_id"])
        if row["adjudicated_gradable"] in ("0", "0.0"):
            out.ungradable.append(image_id)
            continue
        where = f"{LABELS} line {lineno}"
        path = folder.resolve(row["image_id"], where, problems)
        patient = pairs.get(image_id.lower())
        alone += patient is None
        out.add(image_id, row["adjudicated_dr_grade"], where, patient or image_id, path)
    if not pairs:
        out.notes.append(
            f"Messidor-2 without {PAIRS}: its file names do not pair an exam's two eyes, so "
            f"each image is its own patient; put ADCIS's {PAIRS} beside {LABELS} to pair them"
        )
    else:
        out.notes.append(
            f"Messidor-2 patients: the exams of {PAIRS} (both eyes of one exam are one patient)"
            + (f"; {alone} image(s) in no exam there are each their own patient" if alone else "")
        )
    return out
