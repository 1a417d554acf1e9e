"""Tests for the synthetic fundus generator: layout, determinism, grades, lesions and the CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina.errors import RetinaError
from retina.synthetic import IMAGE_SHARES, LABELS_CSV, Eye, generate, plan_eyes, render_fundus

ROOT = Path(__file__).resolve().parents[1]
N, SIZE, SEED = 60, 32, 3


def _rows(folder: Path) -> list[list[str]]:
    with open(folder / LABELS_CSV, newline="") as fh:
        return list(csv.reader(fh))


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "demo", N, SIZE, SEED, workers=1)


def test_kaggle_layout_and_csv(dataset: Path) -> None:
    rows = _rows(dataset)
    assert rows[0] == ["image", "level"]
    ids = [r[0] for r in rows[1:]]
    assert len(ids) == N and len(set(ids)) == N
    assert {r[1] for r in rows[1:]} <= {"0", "1", "2", "3", "4"}
    assert sorted(p.name for p in (dataset / "train").iterdir()) == sorted(f"{i}.jpeg" for i in ids)
    assert not [p for p in dataset.iterdir() if p.name.endswith(".tmp")]
    patients = {i.rsplit("_", 1)[0] for i in ids}
    for patient in patients:  # both eyes of every patient, nothing else
        assert f"{patient}_left" in ids and f"{patient}_right" in ids
    assert len(patients) == N // 2


def test_images_are_jpegs_with_black_border(dataset: Path) -> None:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    outside = np.hypot(yy - (SIZE - 1) / 2, xx - (SIZE - 1) / 2) > SIZE / 2  # the four corners
    for path in sorted((dataset / "train").iterdir()):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (SIZE, SIZE) and im.mode == "RGB"
            a = np.asarray(im, dtype=np.int32)
        assert a[outside].mean() < 10, path  # black around the field: the circle crop removes it
        centre = a[SIZE // 2 - 4 : SIZE // 2 + 4, SIZE // 2 - 4 : SIZE // 2 + 4]
        red, green, blue = centre.reshape(-1, 3).mean(0)
        assert red > 60 and red > green > blue * 0.8, path  # orange-red fundus field


def test_same_seed_same_bytes_regardless_of_workers(dataset: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", N, SIZE, SEED, workers=2)
    assert _tree_bytes(again) == _tree_bytes(dataset)


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "other", N, SIZE, SEED + 1, workers=1)
    a, b = _tree_bytes(dataset), _tree_bytes(other)
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a) > 0.9 * len(a)


def test_grade_shares_match_eyepacs() -> None:
    grades = np.array([eye.grade for eye in plan_eyes(4000, 0)])
    shares = np.bincount(grades, minlength=5) / len(grades)
    assert np.allclose(shares, IMAGE_SHARES, atol=0.015), shares


@pytest.mark.parametrize("n", [50, 51, 80, 200])
def test_small_sets_hold_every_grade_twice(n: int) -> None:
    for seed in range(5):
        eyes = plan_eyes(n, seed)
        assert len(eyes) == n and [e.index for e in eyes] == list(range(n))
        by_patient: dict[int, list[int]] = {}
        for eye in eyes:
            by_patient.setdefault(eye.patient, []).append(eye.grade)
        worst = np.bincount([max(g) for g in by_patient.values()], minlength=5)
        assert worst.min() >= 2, (n, seed, worst)  # stratified splits need >= 2 patients a grade
        assert all(max(g) - min(g) <= 1 for g in by_patient.values())  # correlated eyes


def test_odd_n_gives_last_patient_one_eye(tmp_path: Path) -> None:
    out = generate(tmp_path / "odd", 5, 16, 0, workers=1)
    ids = [r[0] for r in _rows(out)[1:]]
    assert ids == ["1_left", "1_right", "2_left", "2_right", "3_left"]
    assert len(list((out / "train").iterdir())) == 5


def test_higher_grades_have_more_lesion_pixels() -> None:
    # Anatomy and nuisance depend only on (seed, index), so rendering one eye at every grade
    # isolates the lesions: count pixels that differ clearly from the grade-0 rendering.
    changed = np.zeros((6, 5))
    for i in range(6):
        images = [
            np.asarray(render_fundus(Eye(i, 1, "left", g), 64, 7), dtype=np.int32) for g in range(5)
        ]
        for g in range(5):
            changed[i, g] = (np.abs(images[g] - images[0]).max(axis=2) > 30).sum()
    mean = changed.mean(axis=0)
    assert mean[0] == 0
    assert mean[1] > 0 and all(np.diff(mean) > 0), mean
    assert mean[2] > 3 * mean[1] and mean[4] > 0.1 * 64 * 64, mean  # visible at 64 px


def test_overwrite_needs_the_flag_and_rewrites_the_labels(tmp_path: Path) -> None:
    out = generate(tmp_path / "d", 8, 16, 0, workers=1)
    before = (out / LABELS_CSV).read_bytes()
    with pytest.raises(RetinaError, match="--overwrite"):
        generate(out, 4, 16, 0, workers=1)
    assert (out / LABELS_CSV).read_bytes() == before  # a refused run changes nothing
    generate(out, 4, 16, 1, workers=1, overwrite=True)
    ids = [r[0] for r in _rows(out)[1:]]
    assert ids == ["1_left", "1_right", "2_left", "2_right"]
    assert all((out / "train" / f"{i}.jpeg").is_file() for i in ids)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "retina.synthetic", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--n", "1"], "--n 1 is too small"),
        (["--size", "8"], "--size 8 is out of range"),
        (["--seed", "-1"], "--seed -1 is negative"),
        (["--workers", "0"], "--workers 0 must be at least 1"),
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    result = _cli("--out", str(tmp_path / "d"), "--quiet", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_cli_writes_then_refuses_existing_dataset(tmp_path: Path) -> None:
    out = tmp_path / "d"
    first = _cli("--out", str(out), "--n", "4", "--size", "16", "--seed", "0", "--workers", "2")
    assert first.returncode == 0, first.stderr
    assert "wrote 4 images" in first.stdout
    again = _cli("--out", str(out), "--n", "4", "--size", "16", "--quiet")
    assert (
        again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    )
    assert (
        _cli("--out", str(out), "--n", "4", "--size", "16", "--quiet", "--overwrite").returncode
        == 0
    )
    file_out = tmp_path / "file"
    file_out.write_text("x")
    bad = _cli("--out", str(file_out), "--quiet")
    assert bad.returncode == 2 and "is a file" in bad.stderr
