"""`data.image_size` searched: the schema, a decode-once cache per size, and each trial's size.

The real sweep that samples both sizes is the conftest's `small_study` (tests/test_sweep.py,
test_export.py, test_predict.py and test_gallery.py check its trials, export and gallery).

    .venv/bin/pytest tests/test_image_size.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ray.tune.search.sample import Categorical

from retina.engine import build_loss, evaluate
from retina.errors import RetinaError
from retina.models import build_model
from retina.prepare import prepare_data
from study.conclude.holdout import evaluate_on_test
from study.define.schema import hyperparameter_names, load_study, study_from_dict, study_to_dict
from study.define.space import tune_param_space
from study.record.layout import CHECKPOINT_FILE
from study.run.preflight import check_study_folder, preflight

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "search_spaces" / "demo.yaml"
CPU = torch.device("cpu")
SMALL = ["space.pretrained=false", "space.arch=resnet18", "space.epochs=2"]


def sizes_study(data: Path, sizes: str = "{choice: [32, 48]}"):
    return load_study(DEMO, [*SMALL, f"data.path={data}", f"data.image_size={sizes}"])


def test_a_choice_of_sizes_is_a_hyperparameter_written_under_data():
    study = load_study(DEMO, [*SMALL, "data.image_size={choice: [512, 256, 384]}"])
    assert study.image_sizes == (256, 384, 512)  # a cache each, smallest first
    assert hyperparameter_names(study)[-1] == "image_size"  # a trials.parquet column
    assert isinstance(tune_param_space(study)["image_size"], Categorical)
    resolved = study_to_dict(study)
    assert resolved["data"]["image_size"] == {"choice": [512, 256, 384]}  # as written
    assert "image_size" not in resolved["space"]
    assert study_from_dict(resolved) == study
    fixed = load_study(DEMO)
    assert fixed.image_sizes == (64,) and tune_param_space(fixed)["image_size"] == 64


def test_sizes_can_follow_another_dimension_and_others_can_follow_the_size():
    by_arch = "{depends_on: arch, values: {resnet18: 384, resnet50: 256}}"
    archs = "space.arch={choice: [resnet18, resnet50]}"  # demo.yaml fixes resnet18
    study = load_study(DEMO, [archs, f"data.image_size={by_arch}"])
    assert study.image_sizes == (256, 384)
    batch = "space.batch_size={depends_on: image_size, values: {256: 32, 512: 8}}"
    study = load_study(DEMO, ["data.image_size={choice: [256, 512]}", batch])
    assert dict(study.space["batch_size"].by) == {256: 32, 512: 8}


def test_a_study_stored_with_one_size_resumes_unchanged(tmp_path):
    resolved = study_to_dict(load_study(DEMO))
    old = json.loads(json.dumps(resolved))
    assert old["data"]["image_size"] == 64  # as study.json always held it
    (tmp_path / "study.json").write_text(json.dumps({"config": old}))
    check_study_folder(tmp_path, resolved, resume=True)
    searched = study_to_dict(load_study(DEMO, ["data.image_size={choice: [64, 128]}"]))
    with pytest.raises(RetinaError, match="data.image_size: 64 -> "):
        check_study_folder(tmp_path, searched, resume=True)


def cache_folders(root: Path) -> dict[str, float]:
    """Each complete cache folder under `root` and when its meta.json was written."""
    return {p.parent.name: p.stat().st_mtime_ns for p in sorted(root.glob("*/meta.json"))}


def test_the_preflight_builds_a_cache_per_size_once_and_reuses_them(synthetic_data, tmp_path):
    study, root = sizes_study(synthetic_data), tmp_path / "cache"
    data = preflight(study, tmp_path / "results" / "a", study_to_dict(study), False, root)
    built = cache_folders(root)
    assert [name.split("-")[1] for name in built] == ["32px", "48px"]  # one folder per size
    assert data.sizes == (32, 48) and data.image_size == 32
    for size in (32, 48):
        assert data.at_size(size).cache.open().shape[1:] == (3, size, size)
        assert data.at_size(size).split is data.split  # one split for every size
    again = preflight(study, tmp_path / "results" / "b", study_to_dict(study), False, root)
    assert cache_folders(root) == built  # reused: no folder rebuilt or added
    assert {s: again.at_size(s).cache.path for s in again.sizes} == {
        s: data.at_size(s).cache.path for s in data.sizes
    }
    with pytest.raises(RetinaError, match=r"no decode-once cache at 64 px .* 32, 48 px"):
        data.at_size(64)


def test_the_held_out_test_reads_the_cache_of_the_size_the_trial_trained_at(
    synthetic_data, tmp_path
):
    data = prepare_data(synthetic_data, [32, 48], cache_root=tmp_path / "cache", progress=False)
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    trial = {"arch": "resnet18", "class_weighted": False, "head": "classify", "image_size": 48}
    state = {"model": model.state_dict(), "epoch": 1, "config": {"trial": trial}}
    torch.save(state, tmp_path / CHECKPOINT_FILE)
    metrics = evaluate_on_test(tmp_path, data, CPU).metrics  # data as prepared: at 32 px
    at = {s: evaluate(model, data.at_size(s).loader("test", 64, CPU, train=False),
                      build_loss(False), CPU) for s in (32, 48)}  # fmt: skip
    assert metrics.loss == pytest.approx(at[48].loss, rel=1e-5)
    assert metrics.loss != pytest.approx(at[32].loss, rel=1e-5)
