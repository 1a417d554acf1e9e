"""Both dataset layouts are read from real files, and every bad CSV gets its clear message.

Run: .venv/bin/pytest tests/test_manifest.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina.errors import RetinaError
from retina.manifest import read_manifest

ROWS = [(f"{p}_{side}", p % 5) for p in range(5) for side in ("left", "right")]


def jpeg(path: Path, grade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (40 * grade, 60, 20)).save(path, format="JPEG")


def kaggle(root: Path, rows=ROWS, *, folder: str = "train", header: str = "image,level") -> Path:
    for name, grade in rows:
        jpeg(root / folder / f"{name}.jpeg", grade)
    text = header + "\n" + "".join(f"{name},{grade}\n" for name, grade in rows)
    (root / "trainLabels.csv").write_text(text)
    return root


def lab(root: Path, train=ROWS[:6], test=ROWS[6:], *, folder: str = "data", ext: str = "") -> Path:
    for part, rows in (("train", train), ("test", test)):
        for name, grade in rows:
            jpeg(root / folder / f"{name}.jpeg", grade)
        (root / f"{part}_img.csv").write_text("".join(f"{n}{ext}\n" for n, _ in rows))
        (root / f"{part}_label.csv").write_text("".join(f"{g}\n" for _, g in rows))
    return root


def error_of(folder: Path) -> str:
    with pytest.raises(RetinaError) as info:
        read_manifest(folder)
    message = str(info.value)
    assert "Traceback" not in message
    return message


@pytest.mark.parametrize("folder", ["train", "."])
def test_kaggle_layout(tmp_path, folder):
    m = read_manifest(kaggle(tmp_path, folder=folder))
    assert m.layout == "kaggle" and len(m) == 10 and m.given_split is None
    assert m.image_ids[:3] == ("0_left", "0_right", "1_left")
    assert m.labels.dtype == np.int64 and m.labels.tolist() == [g for _, g in ROWS]
    assert m.patient_ids[:4] == ("0", "0", "1", "1")
    image_dir = (tmp_path / folder).resolve()
    assert all(p.parent == image_dir and p.is_file() for p in m.paths)
    assert m.paths[0].name == "0_left.jpeg" and m.root == tmp_path.resolve()


def test_kaggle_extra_columns_any_order(tmp_path):
    kaggle(tmp_path)
    rows = "".join(f"x,{g},{n}\n" for n, g in ROWS)
    (tmp_path / "trainLabels.csv").write_text("source,level,image\n" + rows)
    m = read_manifest(tmp_path)
    assert m.image_ids[0] == "0_left" and m.labels.tolist() == [g for _, g in ROWS]


@pytest.mark.parametrize("folder", ["data", "images", "train", "img", "."])
@pytest.mark.parametrize("ext", ["", ".jpeg"])
def test_lab_layout_reads_every_line(tmp_path, folder, ext):
    m = read_manifest(lab(tmp_path, folder=folder, ext=ext))
    assert m.layout == "lab" and len(m) == 10
    # The first line of each file is an image, not a header: it must be in the manifest.
    assert m.image_ids[0] == "0_left" and m.image_ids[6] == "3_left"
    assert m.given_split == ("train",) * 6 + ("test",) * 4
    assert m.labels.tolist() == [g for _, g in ROWS]
    assert all(p.is_file() and p.parent == (tmp_path / folder).resolve() for p in m.paths)


def test_lab_train_and_test_in_separate_folders(tmp_path):
    lab(tmp_path, train=ROWS[:6], test=[], folder="train")
    lab_test = ROWS[6:]
    for name, grade in lab_test:
        jpeg(tmp_path / "test" / f"{name}.jpeg", grade)
    (tmp_path / "test_img.csv").write_text("".join(f"{n}\n" for n, _ in lab_test))
    (tmp_path / "test_label.csv").write_text("".join(f"{g}\n" for _, g in lab_test))
    m = read_manifest(tmp_path)
    assert [p.parent.name for p in m.paths] == ["train"] * 6 + ["test"] * 4


def test_bom_crlf_spaces_and_trailing_blank_lines(tmp_path):
    kaggle(tmp_path)
    body = "".join(f" {n} , {g} \r\n" for n, g in ROWS)
    (tmp_path / "trainLabels.csv").write_bytes(
        ("\ufeffimage,level\r\n" + body + "\r\n\r\n").encode()
    )
    m = read_manifest(tmp_path)
    assert m.image_ids[0] == "0_left" and len(m) == 10


def test_lab_bom_and_float_labels(tmp_path):
    lab(tmp_path)
    # "2.0" is exactly grade 2 (a spreadsheet's export): accepted.
    labels = "".join(f"{g}.0\n" for _, g in ROWS[:6])
    (tmp_path / "train_label.csv").write_bytes(b"\xef\xbb\xbf" + labels.encode())
    (tmp_path / "train_img.csv").write_bytes(
        b"\xef\xbb\xbf" + b"".join(f"{n}\n".encode() for n, _ in ROWS[:6])
    )
    m = read_manifest(tmp_path)
    assert m.image_ids[0] == "0_left" and m.labels.tolist() == [g for _, g in ROWS]


def test_latin1_csv(tmp_path):
    rows = [("café_left", 1), ("café_right", 2)]
    kaggle(tmp_path, rows)
    text = "image,level\n" + "".join(f"{n},{g}\n" for n, g in rows)
    (tmp_path / "trainLabels.csv").write_bytes(text.encode("latin-1"))
    m = read_manifest(tmp_path)
    assert m.image_ids == ("café_left", "café_right") and m.patient_ids == ("café", "café")


def test_utf16_csv_and_binary_csv(tmp_path):
    kaggle(tmp_path)
    text = "image,level\n" + "".join(f"{n},{g}\n" for n, g in ROWS)
    (tmp_path / "trainLabels.csv").write_bytes(text.encode("utf-16"))
    assert len(read_manifest(tmp_path)) == 10
    (tmp_path / "trainLabels.csv").write_bytes(text.encode("utf-16-le"))
    message = error_of(tmp_path)
    assert "trainLabels.csv" in message and "byte offset 1" in message and "UTF-8" in message


def test_content_hash_stable_and_sensitive(tmp_path):
    kaggle(tmp_path)
    first = read_manifest(tmp_path).content_hash()
    assert read_manifest(tmp_path).content_hash() == first and len(first) == 64
    os.utime(tmp_path / "train" / "0_left.jpeg", ns=(1, 1))
    touched = read_manifest(tmp_path).content_hash()
    assert touched != first
    text = (tmp_path / "trainLabels.csv").read_text().replace("0_left,0", "0_left,1")
    (tmp_path / "trainLabels.csv").write_text(text)
    assert read_manifest(tmp_path).content_hash() != touched


def test_missing_folder_and_no_dataset(tmp_path):
    assert "does not exist" in error_of(tmp_path / "nope")
    (tmp_path / "notes.csv").write_text("x\n")
    kaggle(tmp_path / "sub")
    message = error_of(tmp_path)
    for word in ("no dataset found", "trainLabels.csv", "train_img.csv", "notes.csv", "sub"):
        assert word in message


def test_both_layouts_and_incomplete_lab(tmp_path):
    lab(kaggle(tmp_path))
    message = error_of(tmp_path)
    assert "both" in message and "trainLabels.csv" in message and "own folder" in message
    (tmp_path / "trainLabels.csv").unlink()
    (tmp_path / "test_label.csv").unlink()
    message = error_of(tmp_path)
    assert "lacks test_label.csv" in message


def test_missing_image_folder_and_missing_images(tmp_path):
    kaggle(tmp_path, folder="elsewhere")
    message = error_of(tmp_path)
    assert "none of the 10 images" in message and "looked in" in message
    kaggle(tmp_path)
    (tmp_path / "train" / "3_right.jpeg").unlink()
    (tmp_path / "train" / "4_left.jpeg").unlink()
    message = error_of(tmp_path)
    assert "listed images not found (2)" in message
    assert "line 9: 3_right" in message and "line 10: 4_left" in message
    assert "copy the files" in message


@pytest.mark.parametrize("label", ["mild", "2.5", "7", "-1", "", "nan", "1e0"])
def test_bad_labels(tmp_path, label):
    kaggle(tmp_path)
    text = (tmp_path / "trainLabels.csv").read_text().replace("1_left,1", f"1_left,{label}")
    (tmp_path / "trainLabels.csv").write_text(text)
    message = error_of(tmp_path)
    assert "not an integer grade 0-4 (1)" in message
    assert f"trainLabels.csv line 4: {label!r}" in message and "0, 1, 2, 3, 4" in message


def test_lab_header_line_is_reported_as_label(tmp_path):
    lab(tmp_path)
    labels = (tmp_path / "train_label.csv").read_text()
    (tmp_path / "train_label.csv").write_text("level\n" + labels)
    (tmp_path / "train_img.csv").write_text("image\n" + (tmp_path / "train_img.csv").read_text())
    message = error_of(tmp_path)
    assert "train_label.csv line 1: 'level' (a header? these files have none)" in message
    assert "train_img.csv line 1: image" in message


def test_duplicates(tmp_path):
    kaggle(tmp_path, ROWS + [("2_left", 2)])
    message = error_of(tmp_path)
    assert "duplicate image ids (1)" in message
    assert "2_left: trainLabels.csv line 6, trainLabels.csv line 12" in message


def test_lab_duplicate_across_files_and_length_mismatch(tmp_path):
    lab(tmp_path, train=ROWS[:6], test=ROWS[5:])
    message = error_of(tmp_path)
    assert "2_right: train_img.csv line 6, test_img.csv line 1" in message
    lab(tmp_path)
    (tmp_path / "test_label.csv").write_text("3\n3\n4\n")
    message = error_of(tmp_path)
    assert "test_img.csv has 4 lines, test_label.csv has 3" in message


def test_lab_blank_line_between_rows(tmp_path):
    lab(tmp_path)
    (tmp_path / "train_label.csv").write_text("0\n0\n\n1\n1\n2\n2\n")
    message = error_of(tmp_path)
    assert "train_label.csv line 3" in message and "blank lines" in message


def test_missing_columns(tmp_path):
    kaggle(tmp_path, header="image,grade")
    message = error_of(tmp_path)
    assert "line 1" in message and "'grade'" in message and "`image,level`" in message
    kaggle(tmp_path)
    (tmp_path / "trainLabels.csv").write_text("image,level\n0_left,0\n0_right\n")
    message = error_of(tmp_path)
    assert "too few fields" in message and "line 3: 1 field(s)" in message


@pytest.mark.parametrize(
    "content",
    ["", "\n\n", "image,level\n", "image,level\n\n"],
    ids=["empty", "blank", "header", "header+blank"],
)
def test_empty_kaggle_csv(tmp_path, content):
    kaggle(tmp_path)
    (tmp_path / "trainLabels.csv").write_text(content)
    message = error_of(tmp_path)
    assert "trainLabels.csv" in message and ("is empty" in message or "no rows" in message)


def test_empty_lab_csv(tmp_path):
    lab(tmp_path)
    (tmp_path / "test_img.csv").write_text("\n")
    message = error_of(tmp_path)
    assert "test_img.csv is empty" in message and "one image name per line" in message


def test_names_escaping_the_image_folder(tmp_path):
    kaggle(tmp_path)
    jpeg(tmp_path / "outside.jpeg")
    outside = tmp_path.parent / f"{tmp_path.name}-secret.jpeg"
    jpeg(outside)
    (tmp_path / "train" / "link_left.jpeg").symlink_to(outside)
    rows = [
        ("../outside", 0),
        (str(tmp_path / "outside.jpeg"), 1),
        ("..\\outside", 2),
        ("C:\\data\\x", 3),
        ("link_left", 4),
        ("sub/../../outside", 0),
    ]
    text = "image,level\n" + "".join(f"{n},{g}\n" for n, g in rows)
    (tmp_path / "trainLabels.csv").write_text(text)
    message = error_of(tmp_path)
    assert "would leave the image folder (6)" in message
    for lineno in range(2, 8):
        assert f"trainLabels.csv line {lineno}" in message
    assert f"resolves to {outside.resolve()}" in message


def test_symlink_and_subfolder_inside_are_fine(tmp_path):
    kaggle(tmp_path)
    jpeg(tmp_path / "train" / "sub" / "9_left.jpeg", 1)
    (tmp_path / "train" / "9_right.jpeg").symlink_to(tmp_path / "train" / "0_left.jpeg")
    text = (tmp_path / "trainLabels.csv").read_text() + "sub/9_left,1\n9_right,1\n"
    (tmp_path / "trainLabels.csv").write_text(text)
    m = read_manifest(tmp_path)
    assert m.image_ids[-2:] == ("sub/9_left", "9_right")
    assert m.patient_ids[-2:] == ("sub/9", "9")
    assert m.paths[-1] == (tmp_path / "train" / "0_left.jpeg").resolve()


def test_many_problems_are_listed_20_then_counted(tmp_path):
    rows = [(f"{p}_left", 0) for p in range(30)]
    kaggle(tmp_path, rows)
    text = "image,level\n" + "".join(f"{n},bad\n" for n, _ in rows)
    (tmp_path / "trainLabels.csv").write_text(text)
    message = error_of(tmp_path)
    assert "(30)" in message and "... and 10 more" in message
    assert "line 21:" in message and "line 22:" not in message
