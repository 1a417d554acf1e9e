"""The gallery of the best model's errors (study/conclude/gallery.py): which images it picks,
that it replaces its folder atomically, that a real small sweep leaves one behind, and that
the report shows it inline (study/analyze/gallery.py)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from retina.manifest import read_manifest
from retina.models import build_model
from retina.prepare import prepare_data
from study.analyze.gallery import gallery_section, read_gallery
from study.conclude.gallery import (
    INDEX_COLUMNS,
    Source,
    build_gallery,
    choose_source,
    pick_cases,
    write_gallery,
)


def one_hot_probs(predicted: list[int], confidence: list[float]) -> np.ndarray:
    probs = np.full((len(predicted), 5), 0.0)
    for i, (p, c) in enumerate(zip(predicted, confidence, strict=True)):
        probs[i] = (1 - c) / 4
        probs[i, p] = c
    return probs


def test_pick_cases_takes_the_most_confident_errors_and_seeded_correct_ones():
    # grade 2: five errors of known confidence and four correct; grade 0: one correct only
    true = [2, 2, 2, 2, 2, 2, 2, 2, 2, 0]
    predicted = [0, 1, 3, 4, 0, 2, 2, 2, 2, 0]
    confidence = [0.5, 0.9, 0.7, 0.9, 0.3, 0.8, 0.6, 0.95, 0.4, 0.99]
    probs = one_hot_probs(predicted, confidence)
    cases = pick_cases(np.array(true), probs, seed=0, errors_per_grade=4, correct_per_grade=2)
    errors = cases[cases["kind"] == "error"]
    # the four surest errors, surest first; a tie (0.9) keeps the earlier image first
    assert errors["position"].tolist() == [1, 3, 2, 0]
    assert errors["probability"].tolist() == pytest.approx([0.9, 0.9, 0.7, 0.5])
    assert (errors["predicted"] != errors["true"]).all()
    correct = cases[cases["kind"] == "correct"]
    assert set(correct[correct["true"] == 2]["position"]) <= {5, 6, 7, 8}
    assert len(correct[correct["true"] == 2]) == 2
    assert correct[correct["true"] == 0]["position"].tolist() == [9]
    again = pick_cases(np.array(true), probs, seed=0, errors_per_grade=4, correct_per_grade=2)
    pd.testing.assert_frame_equal(cases, again)  # the same seed, the same pick
    drawn = {tuple(pick_cases(np.array(true), probs, seed=s)["position"]) for s in range(20)}
    assert len(drawn) > 1  # the seed draws the correct cases


def test_choose_source_is_the_best_search_trial_on_test_when_tested():
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "status": ["TERMINATED", "TERMINATED", "ERROR"],
            "best_val_kappa": [0.4, 0.6, 0.9],
            "best_val_loss": [1.0, 1.0, 0.5],
            "best_epoch": [2, 3, 1],
            "test_acc": [0.7, np.nan, np.nan],
        }
    )
    source = choose_source(trials, "val_kappa", "max")
    assert (source.trial_id, source.epoch, source.split) == ("b", 3, "val")  # not tested
    trials.loc[1, "test_acc"] = 0.8
    assert choose_source(trials, "val_kappa", "max").split == "test"
    trials["stage"] = ["search", "confirm", "search"]  # a later stage never picks the model
    assert choose_source(trials, "val_kappa", "max").trial_id == "a"
    assert choose_source(trials.iloc[2:], "val_kappa", "max") is None  # failed only


def tiny_jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def tiny_index(n: int = 2) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": [f"{i}_left" for i in range(n)], "patient": [str(i) for i in range(n)],
            "split": "test", "true": [i % 5 for i in range(n)], "predicted": [4] * n,
            "probability": [0.9] * n, "kind": ["error"] * n,
            "file": [f"g{i}.jpg" for i in range(n)], "cam_file": [f"g{i}-cam.jpg" for i in range(n)],
            "trial_id": "t1", "epoch": 2,
        }
    )  # fmt: skip


def tiny_files(index: pd.DataFrame, value: int) -> dict[str, bytes]:
    names = [*index["file"], *index["cam_file"]]
    return {name: tiny_jpeg(value) for name in names}


def test_write_gallery_replaces_the_folder_whole_or_not_at_all(tmp_path):
    index = tiny_index()
    final = write_gallery(tmp_path, index, tiny_files(index, 10))
    assert final == tmp_path / "gallery"
    written = pd.read_parquet(final / "index.parquet")
    assert written.columns.tolist() == INDEX_COLUMNS
    assert sorted(p.name for p in final.iterdir()) == sorted(
        ["index.parquet", *index["file"], *index["cam_file"]]
    )
    before = (final / "g0.jpg").read_bytes()
    # A second gallery whose writing fails midway (a name that is not a plain file name):
    broken = tiny_files(index, 200) | {"no-such-folder/x.jpg": b"x"}
    with pytest.raises(OSError):
        write_gallery(tmp_path, index, broken)
    assert (final / "g0.jpg").read_bytes() == before  # the old gallery is intact
    assert [p.name for p in tmp_path.iterdir()] == ["gallery"]  # no temp folder left
    write_gallery(tmp_path, index.head(1), tiny_files(index.head(1), 200))
    assert sorted(p.name for p in final.iterdir()) == ["g0-cam.jpg", "g0.jpg", "index.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["gallery"]


def test_report_section_embeds_the_images_or_says_why_not(tmp_path):
    assert "No gallery in this study" in gallery_section(tmp_path)
    index = tiny_index(3)
    write_gallery(tmp_path, index, tiny_files(index, 10))
    section = gallery_section(tmp_path)
    assert section.count('src="data:image/jpeg;base64,') == 6
    assert "True grade 4 (proliferative)" in section and "No image of grade 3" in section
    (tmp_path / "gallery" / "g1-cam.jpg").unlink()
    assert "is incomplete" in gallery_section(tmp_path)
    pd.DataFrame({"image": ["../x"], "file": ["../study.json"]}).to_parquet(
        tmp_path / "gallery" / "index.parquet"
    )
    assert "lacks the column(s)" in read_gallery(tmp_path)


def test_a_real_sweep_leaves_a_gallery_of_its_best_trial(small_study):
    index = pd.read_parquet(small_study / "gallery" / "index.parquet")
    trials = pd.read_parquet(small_study / "trials.parquet")
    best = choose_source(trials, "val_kappa", "max")
    size = int(trials.set_index("trial_id").loc[best.trial_id, "image_size"])  # 32 or 48 px
    assert index.columns.tolist() == INDEX_COLUMNS
    assert not index.empty and set(index["trial_id"]) == {best.trial_id}
    assert set(index["split"]) == {"test"}  # test_top_k=1: the best trial was tested
    assert set(index["epoch"]) == {best.epoch}
    assert (index["kind"] == "error").eq(index["true"] != index["predicted"]).all()
    for name in [*index["file"], *index["cam_file"]]:
        picture = Image.open(small_study / "gallery" / name)
        assert picture.format == "JPEG" and picture.size == (size, size)  # its cache: not enlarged
    assert 'src="data:image/jpeg;base64,' in gallery_section(small_study)


def test_the_gallery_is_the_same_for_the_same_seed(synthetic_data, tmp_path):
    data = prepare_data(synthetic_data, 64, progress=False)
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    source = Source("t0", 1, "val")
    cpu = torch.device("cpu")
    index, files = build_gallery(model, data, source, seed=3, device=cpu, progress=False)
    again, files_again = build_gallery(model, data, source, seed=3, device=cpu, progress=False)
    pd.testing.assert_frame_equal(index, again)
    assert files == files_again  # byte for byte
    val = data.split.indices("val")
    assert len(files) == 2 * len(index)
    manifest = read_manifest(synthetic_data)
    grade_of = dict(zip(manifest.image_ids, manifest.labels.tolist(), strict=True))
    assert [grade_of[i] for i in index["image"]] == index["true"].tolist()  # names match rows
    assert set(index["true"]) == set(np.unique(data.labels[val]))  # every grade in val shown
    assert index[index["kind"] == "correct"].groupby("true").size().max() <= 2
    assert index[index["kind"] == "error"].groupby("true").size().max() <= 4
    write_gallery(tmp_path, index, files)
    shown = read_gallery(tmp_path)
    assert shown["image"].tolist() == index["image"].tolist()
