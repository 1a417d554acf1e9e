"""Patient-level splits: both eyes on one side, stratified by worst grade, stable for a seed.

Run: .venv/bin/pytest tests/test_split.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from retina.errors import RetinaError
from retina.manifest import Manifest, read_manifest
from retina.split import split_by_patient

SHARES = (0.73, 0.07, 0.15, 0.025, 0.025)  # EyePACS-like grade shares


def make_manifest(grades: list[tuple[int, ...]], given: list[str] | None = None) -> Manifest:
    """One patient per tuple, one image per eye. No files: the split never touches them."""
    ids, labels, patients, split = [], [], [], []
    for p, eyes in enumerate(grades):
        for side, grade in zip(("left", "right"), eyes, strict=False):
            ids.append(f"{p}_{side}")
            labels.append(grade)
            patients.append(str(p))
            if given is not None:
                split.append(given[p])
    return Manifest(
        root=Path("/nonexistent"),
        layout="kaggle" if given is None else "lab",
        image_ids=tuple(ids),
        labels=np.asarray(labels, dtype=np.int64),
        patient_ids=tuple(patients),
        paths=tuple(Path("/nonexistent") / f"{i}.jpeg" for i in ids),
        given_split=tuple(split) if given is not None else None,
    )


def eyepacs_like(n_patients: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    worst = rng.choice(5, size=n_patients, p=SHARES)
    return [(int(w), int(rng.integers(0, w + 1))) for w in worst]


def sides_of(split) -> dict[str, np.ndarray]:
    return {"train": split.train, "val": split.val, "test": split.test}


def assert_partition(m: Manifest, split, exclude=frozenset()) -> None:
    parts = sides_of(split)
    everything = np.concatenate(list(parts.values()))
    assert sorted(everything.tolist()) == [i for i in range(len(m)) if i not in exclude]
    owner: dict[str, str] = {}
    for name, idx in parts.items():
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)  # sorted, no repeats
        for i in idx.tolist():
            assert owner.setdefault(m.patient_ids[i], name) == name, "a patient on two sides"


def test_patients_never_straddle_and_shares_follow_fractions():
    m = make_manifest(eyepacs_like(2000))
    split = split_by_patient(m, seed=3)
    assert_partition(m, split)
    n_patients = {
        name: len({m.patient_ids[i] for i in idx}) for name, idx in sides_of(split).items()
    }
    assert abs(n_patients["val"] - 300) <= 5 and abs(n_patients["test"] - 300) <= 5


def test_stratified_by_worst_grade():
    m = make_manifest(eyepacs_like(2000))
    split = split_by_patient(m, seed=0)
    worst = {}
    for i, p in enumerate(m.patient_ids):
        worst[p] = max(worst.get(p, 0), int(m.labels[i]))
    per_grade_total = np.bincount(list(worst.values()), minlength=5)
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        patients = {m.patient_ids[i] for i in sides_of(split)[name].tolist()}
        per_grade = np.bincount([worst[p] for p in patients], minlength=5)
        # Each stratum follows the shares to within one patient.
        assert np.all(np.abs(per_grade - share * per_grade_total) <= 1.0 + 1e-9), name


def test_stable_for_a_seed_across_processes_and_seeds_differ():
    m = make_manifest(eyepacs_like(300))
    a, b = split_by_patient(m, seed=7), split_by_patient(m, seed=7)
    assert all(
        np.array_equal(x, y)
        for x, y in zip(sides_of(a).values(), sides_of(b).values(), strict=True)
    )
    assert a.seed == 7
    other = split_by_patient(m, seed=8)
    assert not np.array_equal(a.val, other.val)
    # Another interpreter with another hash seed must give the very same split.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from test_split import *; "
        "s = split_by_patient(make_manifest(eyepacs_like(300)), seed=7); "
        "print(s.train.tolist(), s.val.tolist(), s.test.tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).parents[1],
    ).stdout.strip()
    assert out == f"{a.train.tolist()} {a.val.tolist()} {a.test.tolist()}"


def test_tiny_dataset_reaches_every_split_with_each_grade():
    # 40 images, 20 patients, 4 per worst grade: every grade in every split, train largest.
    m = make_manifest([(g, g) for g in range(5) for _ in range(4)])
    split = split_by_patient(m, seed=0)
    assert_partition(m, split)
    for name, idx in sides_of(split).items():
        assert set(m.labels[idx].tolist()) == {0, 1, 2, 3, 4}, name
    assert len(split.train) == 20 and len(split.val) == len(split.test) == 10


def test_small_strata_go_to_train_first():
    m = make_manifest([(0, 0)] * 10 + [(4, 4)] + [(3, 3)] * 2)
    split = split_by_patient(m, seed=0)
    assert np.count_nonzero(m.labels[split.train] == 4) == 2  # the only grade-4 patient trains
    # Two grade-3 patients: one trains, the other goes to val or test.
    assert np.count_nonzero(m.labels[split.train] == 3) == 2
    assert np.count_nonzero(m.labels[np.concatenate([split.val, split.test])] == 3) == 2


def test_two_patient_strata_alternate_between_val_and_test():
    m = make_manifest([(0, 0)] * 12 + [(3, 3)] * 2 + [(4, 4)] * 2)
    split = split_by_patient(m, seed=0)
    for grade in (3, 4):
        assert np.count_nonzero(m.labels[split.train] == grade) == 2
    # The second patient of grade 3 and of grade 4 go to different sides.
    assert {3, 4} <= set(m.labels[split.val].tolist()) | set(m.labels[split.test].tolist())
    assert set(m.labels[split.val].tolist()) != set(m.labels[split.test].tolist())


@settings(max_examples=60, deadline=None)
@given(
    grades=st.lists(
        st.lists(st.integers(0, 4), min_size=1, max_size=2).map(tuple), min_size=0, max_size=40
    ),
    seed=st.integers(0, 2**32 - 1),
    val=st.sampled_from([0.0, 0.1, 0.15, 0.3]),
    test=st.sampled_from([0.0, 0.15, 0.5]),
    data=st.data(),
)
def test_any_small_dataset_is_split_without_crash(grades, seed, val, test, data):
    m = make_manifest(grades)
    exclude = frozenset(data.draw(st.sets(st.integers(0, max(len(m) - 1, 0)))) if len(m) else set())
    split = split_by_patient(m, seed=seed, val_fraction=val, test_fraction=test, exclude=exclude)
    assert_partition(m, split, exclude)
    if val == 0.0:
        assert len(split.val) == 0
    if len(m) > len(exclude):
        assert len(split.train) > 0  # train gets the first patient of every grade


def test_exclude_drops_images():
    m = make_manifest(eyepacs_like(50))
    split = split_by_patient(m, exclude=frozenset({0, 5, 7}))
    assert_partition(m, split, {0, 5, 7})


@pytest.mark.parametrize(
    ("val", "test"), [(0.5, 0.5), (-0.1, 0.2), (1.0, 0.0), (float("nan"), 0.1)]
)
def test_bad_fractions(val, test):
    with pytest.raises(RetinaError, match="bad split fractions.*val_fraction=.*use e.g."):
        split_by_patient(make_manifest([(0, 0)] * 5), val_fraction=val, test_fraction=test)


def test_lab_keeps_given_test_and_carves_val_by_patient():
    grades = [(g, g) for g in range(5) for _ in range(6)]
    given = ["test" if p % 3 == 0 else "train" for p in range(len(grades))]
    m = make_manifest(grades, given)
    split = split_by_patient(m, seed=1, val_fraction=0.25, test_fraction=0.9)  # test unused
    assert_partition(m, split)
    assert split.test.tolist() == [i for i, s in enumerate(m.given_split) if s == "test"]
    assert all(m.given_split[i] == "train" for i in np.concatenate([split.train, split.val]))
    assert set(m.labels[split.val].tolist()) == {0, 1, 2, 3, 4}
    assert len(split.val) == 10 and len(split.train) == 30


def test_lab_patient_in_both_files_is_kept_and_warned():
    given = ["train"] * 8
    m = make_manifest([(1, 1)] * 8, given)
    # Patient 0's left eye listed in the lab's test file: the dataset's own split.
    m = Manifest(**{**m.__dict__, "given_split": ("test",) + m.given_split[1:]})
    with pytest.warns(UserWarning, match="both the lab.s train and test.*e.g. 0"):
        split = split_by_patient(m, seed=0, val_fraction=0.5)
    assert split.test.tolist() == [0]
    assert 1 in split.train.tolist() and 1 not in split.val.tolist()


def test_lab_layout_read_from_files(tmp_path):
    (tmp_path / "data").mkdir()
    names = [f"{p}_{s}" for p in range(12) for s in ("left", "right")]
    for i, name in enumerate(names):
        Image.new("RGB", (16, 16), (i, 0, 0)).save(tmp_path / "data" / f"{name}.jpeg")
    grade = {n: (i // 2) % 5 for i, n in enumerate(names)}
    for part, part_names in (("train", names[:16]), ("test", names[16:])):
        (tmp_path / f"{part}_img.csv").write_text("\n".join(part_names) + "\n")
        (tmp_path / f"{part}_label.csv").write_text("\n".join(str(grade[n]) for n in part_names))
    m = read_manifest(tmp_path)
    split = split_by_patient(m, seed=0)
    assert_partition(m, split)
    assert split.test.tolist() == list(range(16, 24))
