"""The public DR datasets' layouts read from folders in their published form (tests/helpers/
layouts.py writes the real file types and quirks): counts, patients, ungradable images left out
and counted, the published split kept, a folder of no layout refused with one message.

Run: .venv/bin/pytest tests/test_layouts.py
"""

from __future__ import annotations

import numpy as np
import pytest

from retina.errors import RetinaError
from retina.layouts import LAYOUT_NAMES
from retina.manifest import read_manifest
from retina.prepare import prepare_data
from study.define.schema import load_study
from tests.helpers import layouts

GRADES = [0, 1, 2, 3, 4] * 3


def prepared(folder, **kw):
    return prepare_data(folder, 32, progress=False, val_fraction=0.2, test_fraction=0.2, **kw)


def error_of(folder, layout: str = "auto") -> str:
    with pytest.raises(RetinaError) as info:
        read_manifest(folder, layout)
    return str(info.value)


def test_aptos_pngs_each_image_its_own_patient(tmp_path):
    m = read_manifest(layouts.aptos(tmp_path, GRADES))
    assert m.layout == "aptos" and len(m) == 15 and m.labels.tolist() == GRADES
    assert m.patient_ids == m.image_ids and m.given_split is None and m.ungradable == ()
    assert all(p.suffix == ".png" and p.parent.name == "train_images" for p in m.paths)
    data = prepared(tmp_path)
    assert "15 images of 15 patients" in data.summary[0]
    assert any("APTOS 2019 publishes no patient ids" in line for line in data.summary)
    with pytest.raises(RetinaError, match="data.split: published, but the aptos layout"):
        prepared(tmp_path, split_mode="published")


def test_messidor2_mixed_files_exams_and_ungradable(tmp_path):
    grades = [0, 1, None, 3, 4, 2, 0, 1, 2, 3, None, 4, 0, 2, 1, 3]
    m = read_manifest(layouts.messidor2(tmp_path, grades))
    assert m.layout == "messidor2" and len(m) == 14
    assert m.ungradable == ("20060412_58002_0200_PP", "IM002395")
    assert m.labels.tolist() == [g for g in grades if g is not None]
    assert {p.suffix for p in m.paths} == {".png", ".JPG", ".tif"}  # .jpg in the CSV: found
    # Exams of messidor-2.csv: images 2k and 2k+1 are one patient, kept when one is left out.
    assert len(set(m.patient_ids)) == 8 and m.patient_ids[0] == m.patient_ids[1]
    data = prepared(tmp_path)
    assert "14 images of 8 patients" in data.summary[0]
    assert "2 image(s) the dataset grades ungradable are left out" in data.summary[1]
    assert data.ungradable == 2 and len(data.labels) == 14  # never given a grade
    patients = np.asarray(m.patient_ids)
    sides = [set(patients[data.split.indices(n)]) for n in ("train", "val", "test")]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])


def test_messidor2_without_exam_list_says_each_image_is_a_patient(tmp_path):
    m = read_manifest(layouts.messidor2(tmp_path, [0, 1, 2, 3, 4, 2], pairs=False))
    assert m.patient_ids == m.image_ids
    assert "its file names do not pair an exam's two eyes" in m.notes[0]


def test_idrid_header_quirks_restarted_numbering_and_published_split(tmp_path):
    train, test = GRADES, [0, 1, 2, 3, 4, 2]
    layouts.idrid(tmp_path, train, test)
    for folder in (tmp_path, tmp_path / layouts.IDRID):  # the root or its part B
        m = read_manifest(folder)
        assert m.layout == "idrid" and len(m) == 21 and m.labels.tolist() == train + test
    assert m.image_ids[0] == "train/IDRiD_001" and m.image_ids[15] == "test/IDRiD_001"
    assert m.given_split == ("train",) * 15 + ("test",) * 6 and m.patient_ids == m.image_ids
    data = prepared(tmp_path, split_mode="published")
    assert data.split.test.tolist() == list(range(15, 21))  # the published test set, as is
    assert set(data.split.train.tolist()) | set(data.split.val.tolist()) == set(range(15))
    assert "split: the dataset's own" in data.summary[-1]
    patient = prepared(tmp_path)  # patient-level by default: test drawn from all 21
    assert "split: patient-level" in patient.summary[-1]
    assert patient.split.test.tolist() != list(range(15, 21))


def test_ddr_lists_grade_5_excluded_and_three_published_parts(tmp_path):
    parts = {"train": GRADES + [5], "valid": [0, 1, 2, 3, 4, 5], "test": [4, 3, 2, 1, 0, 5, 5]}
    layouts.ddr(tmp_path, parts)
    m = read_manifest(tmp_path)
    assert m.layout == "ddr" and len(m) == 25 and len(m.ungradable) == 4
    assert 5 not in m.labels.tolist() and m.labels.tolist() == [
        g for grades in parts.values() for g in grades if g != 5
    ]
    assert read_manifest(tmp_path / "DR_grading").image_ids == m.image_ids
    data = prepared(tmp_path, split_mode="published")
    given = np.asarray(m.given_split)
    for name in ("train", "val", "test"):
        assert data.split.indices(name).tolist() == np.flatnonzero(given == name).tolist()
    assert data.ungradable == 4
    assert "4 image(s) the dataset grades ungradable are left out" in data.summary[1]


def test_a_folder_of_no_layout_gets_one_message_naming_each(tmp_path):
    (tmp_path / "labels.csv").write_text("x\n")
    message = error_of(tmp_path)
    assert message.startswith(f"no dataset found in {tmp_path}")
    for needs in ("trainLabels.csv", "train_img.csv", "id_code,diagnosis", "messidor_data.csv",
                  "IDRiD_Disease Grading_Training Labels.csv", "DR_grading/train.txt"):  # fmt: skip
        assert needs in message, needs
    layouts.aptos(tmp_path / "inner", [0, 1])
    assert "subfolder(s) inner" in error_of(tmp_path)


def test_a_forced_layout_and_two_layouts_in_one_folder(tmp_path):
    layouts.aptos(tmp_path, GRADES)
    assert "is not in the ddr layout, which needs DDR: DR_grading/train.txt" in error_of(tmp_path, "ddr")  # fmt: skip
    assert "unknown layout 'eyepacs'" in error_of(tmp_path, "eyepacs")
    layouts.messidor2(tmp_path, [0, 1, 2])
    message = error_of(tmp_path)
    assert "both" in message and "data.layout: aptos | messidor2" in message
    assert read_manifest(tmp_path, "messidor2").layout == "messidor2"


def test_ungraded_messidor_row_and_bad_idrid_grade_are_named(tmp_path):
    layouts.messidor2(tmp_path / "m", [0, 1, 2])
    path = tmp_path / "m" / "messidor_data.csv"
    path.write_text(path.read_text().replace(",1,0,1\n", ",,0,1\n"))  # gradable, no grade
    assert "messidor_data.csv line 3: ''" in error_of(tmp_path / "m")
    layouts.idrid(tmp_path / "i", [0, 1, 2], [3])
    path = tmp_path / "i" / layouts.IDRID / "2. Groundtruths" / layouts.IDRID_LABELS["b. Testing Set"]  # fmt: skip
    path.write_text(path.read_text().replace("IDRiD_001,3", "IDRiD_001,7"))
    assert "b. IDRiD_Disease Grading_Testing Labels.csv line 2: '7'" in error_of(tmp_path / "i")


def test_the_study_keys_layout_and_split(tmp_path):
    base = ["name=t", f"data.path={tmp_path}"]
    study = load_study("search_spaces/demo.yaml", base + ["data.layout=idrid", "data.split=published"])  # fmt: skip
    assert (study.data.layout, study.data.split) == ("idrid", "published")
    assert load_study("search_spaces/demo.yaml", base).data.layout == "auto"
    with pytest.raises(RetinaError, match="data.split"):
        load_study("search_spaces/demo.yaml", base + ["data.layout=aptos", "data.split=published"])
    with pytest.raises(RetinaError, match="data.layout"):
        load_study("search_spaces/demo.yaml", base + ["data.layout=eyepacs"])
    assert set(LAYOUT_NAMES) == {"kaggle", "lab", "aptos", "messidor2", "idrid", "ddr"}
