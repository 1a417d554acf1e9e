"""prepare_data end to end on tiny real datasets: manifest -> cache -> split -> checks -> loader.

Run: .venv/bin/pytest tests/test_prepare.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from retina.errors import RetinaError
from retina.prepare import prepare_data

CPU = torch.device("cpu")


def fundus(path: Path, grade: int) -> None:
    """A 32 px 'fundus': orange disc on black, brightness by grade."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (32, 32))
    ImageDraw.Draw(image).ellipse((3, 3, 28, 28), fill=(120 + 25 * grade, 60, 20))
    image.save(path, format="JPEG")


def kaggle(root: Path, grades=range(5), per_grade: int = 4) -> Path:
    """per_grade patients (two eyes each) for every grade: 40 images by default."""
    rows = []
    for grade in grades:
        for k in range(per_grade):
            for side in ("left", "right"):
                name = f"{grade}{k:02d}_{side}"
                fundus(root / "train" / f"{name}.jpeg", grade)
                rows.append(f"{name},{grade}\n")
    (root / "trainLabels.csv").write_text("image,level\n" + "".join(rows))
    return root


def lab(root: Path, train: list[tuple[str, int]], test: list[tuple[str, int]]) -> Path:
    for part, rows in (("train", train), ("test", test)):
        for name, grade in rows:
            fundus(root / "data" / f"{name}.jpeg", grade)
        (root / f"{part}_img.csv").write_text("".join(f"{n}\n" for n, _ in rows))
        (root / f"{part}_label.csv").write_text("".join(f"{g}\n" for _, g in rows))
    return root


def eyes(grade: int, patients: range) -> list[tuple[str, int]]:
    return [(f"{grade}{p:02d}_{s}", grade) for p in patients for s in ("left", "right")]


def prepare(data: Path, tmp_path: Path, **kwargs):
    return prepare_data(data, 16, cache_root=tmp_path / "cache", progress=False, **kwargs)


def test_kaggle_end_to_end(tmp_path):
    data = prepare(kaggle(tmp_path / "data"), tmp_path, split_seed=3)
    assert data.layout == "kaggle" and data.data_dir == (tmp_path / "data").resolve()
    assert data.image_size == 16 and data.preprocessing == "none" and data.split.seed == 3
    assert len(data.manifest_hash) == 64 and data.labels.shape == (40,)
    counts = data.class_counts()
    assert counts == {"train": [4] * 5, "val": [2] * 5, "test": [2] * 5}
    sides = [data.split.train, data.split.val, data.split.test]
    assert sorted(np.concatenate(sides).tolist()) == list(range(40))

    loader = data.loader("train", 8, CPU, train=True, seed=1)
    assert loader.num_images == 20
    seen = 0
    for x, y in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 16, 16) and y.dtype == torch.int64
        seen += len(y)
    assert seen == 20
    val = data.loader("val", 4, CPU, train=False)
    ys = torch.cat([y.clone() for _, y in val]).tolist()  # y is a reused buffer
    assert sorted(ys) == sorted(data.labels[data.split.val].tolist())

    again = prepare(tmp_path / "data", tmp_path, split_seed=3)  # the cache is reused
    assert again.cache.path == data.cache.path
    assert np.array_equal(again.split.val, data.split.val)


def test_lab_end_to_end_keeps_given_test(tmp_path):
    train = [row for g in range(5) for row in eyes(g, range(3))]
    test = [row for g in range(5) for row in eyes(g, range(3, 4))]
    data = prepare(lab(tmp_path / "data", train, test), tmp_path, val_fraction=0.3)
    assert data.layout == "lab"
    assert data.split.test.tolist() == list(range(30, 40))
    assert data.class_counts()["test"] == [2] * 5
    assert data.class_counts()["train"] == [4] * 5 and data.class_counts()["val"] == [2] * 5


def test_empty_val_split_is_reported_before_caching(tmp_path):
    with pytest.raises(RetinaError) as info:
        prepare(kaggle(tmp_path / "data"), tmp_path, val_fraction=0.0)
    message = str(info.value)
    assert (
        "the val split is empty: 0 images" in message
        and "40 usable images of 20 patients" in message
    )
    assert "val_fraction=0.0" in message and "raise val_fraction" in message
    assert not (tmp_path / "cache").exists()  # failed fast: nothing decoded, nothing written


def test_empty_test_split(tmp_path):
    with pytest.raises(RetinaError, match="the test split is empty.*raise test_fraction"):
        prepare(kaggle(tmp_path / "data"), tmp_path, test_fraction=0.0)


def test_grade_absent_from_train(tmp_path):
    with pytest.raises(RetinaError) as info:
        prepare(kaggle(tmp_path / "data", grades=range(4)), tmp_path)
    message = str(info.value)
    assert "grade(s) 4 have no image in train" in message
    assert "train [4, 4, 4, 4, 0]" in message and "add images of grade(s) 4" in message


def test_grade_absent_from_lab_train_part(tmp_path):
    train = [row for g in range(4) for row in eyes(g, range(3))]
    test = [row for g in range(5) for row in eyes(g, range(3, 4))]
    with pytest.raises(RetinaError, match=r"grade\(s\) 4 have no image in train.*train_label.csv"):
        prepare(lab(tmp_path / "data", train, test), tmp_path)


def test_bad_image_is_named_or_skipped(tmp_path):
    root = kaggle(tmp_path / "data", per_grade=5)
    (root / "train" / "000_left.jpeg").write_bytes(b"")  # zero-byte JPEG
    with pytest.raises(RetinaError) as info:
        prepare(root, tmp_path)
    assert "000_left.jpeg" in str(info.value) and "--skip-bad" in str(info.value)

    data = prepare(root, tmp_path, skip_bad=True)
    assert data.cache.skipped_indices == {0}
    everything = np.concatenate([data.split.train, data.split.val, data.split.test])
    assert 0 not in everything.tolist() and len(everything) == 49
    assert sum(sum(c) for c in data.class_counts().values()) == 49


def test_skipped_images_emptying_a_split(tmp_path):
    train = [row for g in range(5) for row in eyes(g, range(3))]
    root = lab(tmp_path / "data", train, eyes(0, range(3, 4)))
    for name in ("003_left", "003_right"):  # the lab's whole test part is broken
        (root / "data" / f"{name}.jpeg").write_text("not an image")
    with pytest.raises(RetinaError) as info:
        prepare(root, tmp_path, skip_bad=True)
    message = str(info.value)
    assert "the test split is empty" in message and "2 bad images skipped" in message
    assert "test_img.csv" in message


def test_unknown_split_name(tmp_path):
    data = prepare(kaggle(tmp_path / "data"), tmp_path)
    with pytest.raises(RetinaError, match="unknown split 'dev'.*train, val, test"):
        data.loader("dev", 4, CPU, train=False)


def test_a_node_without_the_cache_builds_it_once_and_keeps_the_split(tmp_path):
    import shutil

    data = prepare(kaggle(tmp_path / "data"), tmp_path)
    assert data.on_this_machine() is data  # the cache is here: nothing to do
    before = data.cache.open().copy()
    shutil.rmtree(data.cache.path.parent)  # as on a node that never saw the driver's cache
    here = data.on_this_machine()
    assert here.cache.path == data.cache.path and here.cache.path.exists()
    assert here.split is data.split
    np.testing.assert_array_equal(here.cache.open(), before)


def test_a_node_with_other_data_refuses(tmp_path):
    import shutil

    root = kaggle(tmp_path / "data")
    data = prepare(root, tmp_path)
    shutil.rmtree(data.cache.path.parent)
    fundus(root / "train" / "000_left.jpeg", 4)  # a file changed under the same name
    with pytest.raises(RetinaError, match="differs from the driver's"):
        data.on_this_machine()
