"""The confirmation stage and per-image predictions without a sweep: the `confirm` YAML key,
the cells it retrains, the engine's per-image softmax and the predictions files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import torch
from torch import nn

from retina.engine import evaluate
from retina.errors import RetinaError
from study.conclude.confirm import confirm_cells, confirm_seeds
from study.conclude.grow import check_growable, parse_cells
from study.define.schema import hyperparameter_names, load_study, study_from_dict, study_to_dict
from study.define.space import confirm_param_space, trial_seed, trial_values
from study.record.layout import confirm_dir
from study.record.predictions import (
    COLUMNS,
    SplitPredictions,
    load_split,
    predictions_frame,
    predictions_path,
    save_split,
    write_predictions,
)
from study.record.results import ResultsStore

DEMO = "search_spaces/demo.yaml"


# ---- the YAML key -------------------------------------------------------------------------
def test_confirm_key_defaults_overrides_and_round_trip():
    study = load_study(DEMO, ["confirm.seeds=3", "confirm.compare=[arch, pretrained]"])
    assert study.confirm.compare == ("arch", "pretrained") and study.confirm.seeds == 3
    assert study_from_dict(study_to_dict(study)) == study
    assert study_to_dict(study)["confirm"] == {
        "compare": ["arch", "pretrained"], "seeds": 3, "margin": 0.05, "test": "test",
    }  # fmt: skip
    assert load_study(DEMO, ["confirm.margin=0.1"]).confirm.margin == 0.1
    off = load_study(DEMO, ["confirm.seeds=0"])
    assert off.confirm.seeds == 0 and confirm_seeds(off) == []
    doc = study_to_dict(study)
    del doc["confirm"]  # a file without the key: no confirmation stage
    assert study_from_dict(doc).confirm.seeds == 0
    for name in ("demo", "lab3", "full"):
        seeds = load_study(f"search_spaces/{name}.yaml").confirm.seeds
        assert seeds >= (2 if name == "demo" else 3), name


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("confirm.compare=[lr]", "confirm.compare: lr is loguniform"),
        ("confirm.compare=[archh]", "'archh' is not a dimension; did you mean arch?"),
        ("confirm.compare=arch", "confirm.compare: expected a list of names"),
        ("confirm.compare=[arch, arch]", "names a dimension twice"),
        ("confirm.seeds=-1", "confirm.seeds: must be between 0 and 100"),
        ("confirm.seeds=two", "confirm.seeds: expected an integer"),
        ("confirm.sedes=2", "confirm.sedes: unknown key; did you mean confirm.seeds?"),
        ("confirm.margin=0", "confirm.margin: must be > 0"),
    ],
)
def test_bad_confirm_names_file_key_and_fix(item, expected):
    with pytest.raises(RetinaError) as err:
        load_study(DEMO, [item])
    text = str(err.value)
    assert text.startswith(f"{DEMO}: --set {item}: ") and expected in text, text


def test_confirm_in_a_file_is_validated_there(tmp_path):
    text = open(DEMO).read().replace("lr: {loguniform: [3.0e-3, 3.0e-2]}", "lr: 0.01")
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("compare: [head]", "compare: [lr]"))
    assert load_study(path).confirm.compare == ("lr",)  # fixed: one cell
    with pytest.raises(RetinaError) as err:  # the override made lr continuous: it is named
        load_study(path, ["space.lr={uniform: [0.001, 0.1]}"])
    assert str(err.value).startswith(f"{path}: --set space.lr=")
    assert "confirm.compare: lr is uniform" in str(err.value)
    path.write_text(text.replace("compare: [head]", "compare: [weight_decay]"))
    with pytest.raises(RetinaError, match=r"s\.yaml: confirm\.compare: weight_decay is log"):
        load_study(path)


# ---- which runs the stage makes ------------------------------------------------------------
def _trials(study, rows):
    store = ResultsStore("/nonexistent", hyperparameter_names(study), "val_kappa", "max")
    base = {"lr": 0.01, "batch_size": 16, "epochs": 2, "weight_decay": 1e-4}
    for trial_id, arch, pretrained, kappa, loss, status in rows:
        config = {"arch": arch, "pretrained": pretrained, **base}
        store.start_trial(trial_id, config, stage="search", seed=0)
        store.record_epoch(trial_id, {"epoch": 1, "val_kappa": kappa, "val_loss": loss})
        store.finish_trial(trial_id, status)
    return store.trials_frame()


def test_cells_take_the_best_search_trial_by_the_one_ranking():
    arch = "space.arch={choice: [resnet18, resnet50]}"  # demo.yaml's arch is fixed
    study = load_study(DEMO, [arch, "confirm.seeds=2", "confirm.compare=[arch, pretrained]"])
    trials = _trials(
        study,
        [
            ("t1", "resnet18", True, 0.5, 1.0, "TERMINATED"),
            ("t2", "resnet18", True, 0.5, 0.9, "TERMINATED"),  # tie on kappa: lower loss wins
            ("t3", "resnet18", False, 0.2, 1.0, "TERMINATED"),
            ("t4", "resnet18", False, 0.9, 1.0, "ERROR"),  # failed: never a cell's best
            ("t5", "resnet50", False, 0.1, 1.0, "TERMINATED"),
        ],
    )
    cells, notes = confirm_cells(study, trials, hyperparameter_names(study))
    assert [(c["arch"], c["pretrained"]) for c in cells] == [
        ("resnet18", True), ("resnet18", False), ("resnet50", False),
    ]  # fmt: skip
    assert "arch=resnet18, pretrained=true: best search trial t2" in notes
    assert "arch=resnet18, pretrained=false: best search trial t3" in notes
    assert "arch=resnet50, pretrained=true: no finished search trial; not confirmed" in notes
    assert all(type(c["pretrained"]) is bool and type(c["batch_size"]) is int for c in cells)
    assert confirm_seeds(study) == [1000, 1001]

    space = confirm_param_space(cells, confirm_seeds(study))
    assert set(space) == {"cell", "seed"}
    config = {"cell": cells[0], "seed": 1001}  # what Tune gives one point of the grid
    assert trial_values(config)["arch"] == "resnet18" and trial_seed(study, config) == 1001
    assert trial_seed(study, {"arch": "resnet18"}) == study.seed  # a search trial


def test_confirm_rows_are_never_search_rows():
    study = load_study(DEMO, ["confirm.compare=[arch]"])
    trials = _trials(study, [("t1", "resnet18", False, 0.5, 1.0, "TERMINATED")])
    rerun = trials.assign(trial_id="c1", stage="confirm", best_val_kappa=0.99)
    cells, _ = confirm_cells(study, pd.concat([trials, rerun]), hyperparameter_names(study))
    assert len(cells) == 1 and cells[0]["lr"] == 0.01


# ---- per-image predictions -----------------------------------------------------------------
def test_evaluate_keeps_each_images_softmax_in_loader_order():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    batches = [(torch.randn(b, 3, 2, 2), torch.randint(0, 5, (b,))) for b in (4, 4, 3)]
    metrics = evaluate(model, batches, nn.CrossEntropyLoss(), "cpu", keep_probabilities=True)
    probs = metrics.probabilities
    assert probs.dtype == np.float32 and probs.shape == (11, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    x = torch.cat([b[0] for b in batches])
    np.testing.assert_allclose(probs, torch.softmax(model(x), 1).detach().numpy(), rtol=1e-5)
    y = torch.cat([b[1] for b in batches]).numpy()
    conf = np.zeros((5, 5), dtype=np.int64)
    np.add.at(conf, (y, probs.argmax(1)), 1)
    assert (conf == metrics.confusion).all()  # the rows agree with the confusion matrix
    assert evaluate(model, batches, nn.CrossEntropyLoss(), "cpu").probabilities is None


def test_predictions_files_read_as_one_table_and_are_written_once(tmp_path):
    labels = np.array([0, 1, 2, 3, 4, 0])
    ids, patients = (
        [f"{i // 2}_{'left' if i % 2 == 0 else 'right'}" for i in range(6)],
        [str(i // 2) for i in range(6)],
    )
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=3).astype(np.float32)
    save_split(tmp_path, SplitPredictions("val", np.array([4, 0, 2]), probs))
    val = load_split(tmp_path, "val")
    assert load_split(tmp_path, "test") is None
    np.testing.assert_array_equal(val.probabilities, probs)
    test = SplitPredictions("test", np.array([1, 3]), probs[:2])
    results = tmp_path / "study"
    one = predictions_frame("a_00000", [val, test], labels, ids, patients)
    assert write_predictions(results, "a_00000", one)
    two = predictions_frame("a_00001", [val], labels, ids, patients)
    assert write_predictions(results, "a_00001", two)
    before = predictions_path(results, "a_00000").read_bytes()
    assert not write_predictions(results, "a_00000", two)  # never rewritten
    assert predictions_path(results, "a_00000").read_bytes() == before

    table = pd.read_parquet(results / "predictions")
    assert list(table.columns) == COLUMNS and len(table) == 3 + 2 + 3
    assert ds.dataset(results / "predictions", format="parquet").to_table().num_rows == 8
    first = table[(table["trial_id"] == "a_00000") & (table["split"] == "val")]
    assert first["image"].tolist() == ["2_left", "0_left", "1_left"]
    assert first["patient"].tolist() == ["2", "0", "1"]
    assert first["true"].tolist() == [4, 0, 2]
    assert first["predicted"].tolist() == probs.argmax(1).tolist()
    assert table["true"].dtype == np.int8 and table["p0"].dtype == np.float32
    got = first[[f"p{c}" for c in range(5)]].to_numpy()
    np.testing.assert_array_equal(got, probs)
    with pytest.raises(ValueError, match="probabilities of shape"):
        SplitPredictions("val", np.array([1]), probs)


def test_predictions_carry_a_score_and_a_regress_head_has_no_probabilities(tmp_path):
    labels, ids, patients = np.array([0, 2, 4]), ["0_left", "0_right", "1_left"], ["0", "0", "1"]
    probs = np.array([[0.5, 0.5, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0.25, 0.75]], np.float32)
    classify = SplitPredictions("val", np.arange(3), probs)
    np.testing.assert_allclose(classify.scores, [0.5, 2.0, 3.75])  # sum_k k * p_k
    scores = np.array([0.2, 1.7, 3.9], np.float32)
    regress = SplitPredictions("test", np.arange(3), None, scores, np.array([0, 2, 4]))
    save_split(tmp_path, regress)
    back = load_split(tmp_path, "test")
    assert back.probabilities is None and back.predicted.tolist() == [0, 2, 4]
    np.savez(tmp_path / "val_predictions.npz", index=np.arange(3), probabilities=probs)
    assert load_split(tmp_path, "val").predicted.tolist() == [0, 2, 4]  # an older file
    frame = predictions_frame("t", [classify, back], labels, ids, patients)
    assert write_predictions(tmp_path / "s", "t", frame)
    table = pd.read_parquet(tmp_path / "s" / "predictions")
    test = table[table["split"] == "test"]
    assert test[[f"p{c}" for c in range(5)]].isna().all().all()  # null, not NaN
    np.testing.assert_allclose(test["score"], scores)
    assert test["predicted"].tolist() == [0, 2, 4] and table["score"].dtype == np.float32
    with pytest.raises(ValueError, match="need scores"):
        SplitPredictions("test", np.arange(3), None, scores)


# ---- more seeds (--more-seeds) -------------------------------------------------------------
def test_more_seeds_continue_the_run_index_and_name_their_cells():
    study = load_study(DEMO, ["confirm.seeds=3", "seed=7"])
    first, more = confirm_seeds(study), confirm_seeds(study, start=3, count=2)
    assert first == [1007, 1008, 1009] and more == [1010, 1011]  # never an earlier one
    assert confirm_dir(0) == "tune-confirm" and confirm_dir(3) == "tune-confirm-3"
    assert parse_cells("pretrained=true, arch=resnet18", ("arch", "pretrained")) == {
        "pretrained": True, "arch": "resnet18",
    }  # fmt: skip
    assert parse_cells(None, ("arch",)) == {}
    with pytest.raises(RetinaError, match=r"--cells lr=0.1: 'lr=0.1' is not KEY=VALUE"):
        parse_cells("lr=0.1", ("arch", "pretrained"))


def test_more_seeds_on_a_study_without_confirm_says_the_fix(tmp_path):
    study = load_study(DEMO, ["confirm.seeds=0"])
    store = ResultsStore(tmp_path, hyperparameter_names(study), "val_kappa", "max")
    with pytest.raises(RetinaError) as err:
        check_growable(study, tmp_path, store)
    text = str(err.value)
    assert "has no confirm stage (confirm.seeds: 0)" in text
    assert "confirm: {compare: [arch, pretrained], seeds: 3}" in text and "--name" in text
    with pytest.raises(RetinaError, match="has not finished its confirm stage; finish it first"):
        check_growable(load_study(DEMO, ["confirm.seeds=2"]), tmp_path, store)


def test_more_seeds_flags_are_checked_before_any_work(tmp_path):
    from study.sweep import main

    base = [DEMO, "--results", str(tmp_path)]
    with pytest.raises(RetinaError, match="--more-seeds 0: give a number of seeds >= 1"):
        main([*base, "--more-seeds", "0"])
    with pytest.raises(RetinaError, match="--cells chooses the cells of --more-seeds K"):
        main([*base, "--cells", "head=classify"])
    with pytest.raises(RetinaError, match=r"demo holds no study; run it first without the flag"):
        main([*base, "--more-seeds", "2"])
    assert not (tmp_path / "demo").exists()  # nothing was made
