"""results/<study>/optuna.log from a results store, read back with Optuna's own API."""

from __future__ import annotations

import optuna
import pytest

from study.define.optuna_space import optuna_distributions
from study.define.schema import load_study
from study.record.layout import OPTUNA_LOG, Stage
from study.record.optuna_log import CONFIRM_SUFFIX, OptunaLog
from study.record.results import ResultsStore
from tests.test_results_store import HP, epoch_result

CFG = {"arch": "resnet18", "pretrained": False, "lr": 0.01, "batch_size": 8, "epochs": 3}


def fed_store(tmp_path) -> tuple[ResultsStore, OptunaLog]:
    study = load_study("search_spaces/demo.yaml", [])
    store = ResultsStore(tmp_path, HP, "val_kappa", "max")
    log = OptunaLog(tmp_path, "demo", optuna_distributions(study), "max")
    store.mirrors.append(log)
    store.start_trial("done", CFG)
    store.start_trial("pruned", CFG | {"batch_size": 16})
    store.start_trial("failed", CFG | {"lr": 0.02})
    store.start_trial("running", CFG)
    for e, k in [(1, 0.1), (2, 0.5), (3, 0.4)]:
        store.record_epoch("done", epoch_result(e, k))
    for e, k in [(1, 0.05), (2, 0.2)]:
        store.record_epoch("pruned", epoch_result(e, k))  # ASHA stopped it after 2 of 3
    store.record_epoch("failed", epoch_result(1, 0.0))
    store.finish_trial("done", "TERMINATED")
    store.finish_trial("pruned", "TERMINATED")
    store.record_failure("failed", "loss is NaN")
    store.finish_trial("failed", "ERROR")
    store.record_test("done", 2, {f"test_{k}": 0.5 for k in _metric_keys()}, [1] * 25)
    store.start_trial("confirm-1", CFG, stage=Stage.CONFIRM, seed=1000)
    store.record_epoch("confirm-1", epoch_result(3, 0.3))
    store.finish_trial("confirm-1", "TERMINATED")
    return store, log


def _metric_keys():
    from study.record.tables import METRIC_KEYS

    return METRIC_KEYS


def load(tmp_path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / OPTUNA_LOG))
    )
    return optuna.load_study(study_name=name, storage=storage)


def test_every_ended_trial_is_in_optuna_log_with_its_state_params_and_epochs(tmp_path):
    store, _ = fed_store(tmp_path)
    store.flush()
    trials = {t.user_attrs["trial_id"]: t for t in load(tmp_path, "demo").trials}
    assert set(trials) == {"done", "pruned", "failed"}  # a running trial has not ended yet
    done, pruned, failed = trials["done"], trials["pruned"], trials["failed"]
    assert done.state == optuna.trial.TrialState.COMPLETE
    assert done.value == pytest.approx(0.5)  # its best epoch's, as the study ranks it
    assert done.intermediate_values == {1: 0.1, 2: 0.5, 3: 0.4}
    assert done.params == {"pretrained": False, "lr": 0.01, "batch_size": 8, "epochs": 3}
    assert done.distributions["lr"] == optuna.distributions.FloatDistribution(3e-3, 3e-2, log=True)
    assert done.user_attrs["test_kappa"] == pytest.approx(0.5)
    assert done.user_attrs["stage"] == "search" and done.user_attrs["best_epoch"] == 2
    assert done.datetime_start <= done.datetime_complete
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert pruned.intermediate_values == {1: 0.05, 2: 0.2}  # the rung it reached
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "NaN" in failed.user_attrs["error"]
    confirm = load(tmp_path, "demo" + CONFIRM_SUFFIX).trials
    assert [t.user_attrs["trial_id"] for t in confirm] == ["confirm-1"]
    assert confirm[0].user_attrs["seed"] == 1000


def test_trials_that_end_are_appended_and_a_rebuild_never_duplicates_one(tmp_path):
    store, log = fed_store(tmp_path)
    store.flush()
    before = (tmp_path / OPTUNA_LOG).read_bytes()
    store.finish_trial("running", "ERROR", "killed")
    store.flush()
    after = (tmp_path / OPTUNA_LOG).read_bytes()
    assert after.startswith(before) and len(after) > len(before)  # appended: a dashboard follows
    store.record_test("pruned", 2, {f"test_{k}": 0.1 for k in _metric_keys()}, [1] * 25)
    store.flush()  # a trial already written changed: the file is rebuilt
    log.write(store)  # and again, as a driver after --resume does
    trials = load(tmp_path, "demo").trials
    assert sorted(t.user_attrs["trial_id"] for t in trials) == [
        "done",
        "failed",
        "pruned",
        "running",
    ]
    assert [t for t in trials if t.user_attrs["trial_id"] == "pruned"][0].user_attrs[
        "test_acc"
    ] == 0.1
    assert not list(tmp_path.glob(".optuna.log*"))  # no temp file left behind


def test_distributions_are_those_of_rays_optuna_search():
    from ray.tune.search.optuna import OptunaSearch

    from study.define.space import tune_param_space

    study = load_study("search_spaces/demo.yaml", ["space.arch={choice: [resnet18, resnet50]}"])
    ray_space = OptunaSearch.convert_search_space(tune_param_space(study))
    assert optuna_distributions(study) == ray_space


def test_the_warm_searcher_of_more_suggests_after_seeing_every_earlier_trial(tmp_path):
    from study.define.space import tune_param_space
    from study.run.warm_start import warm_searcher

    store, _ = fed_store(tmp_path)
    study = load_study("search_spaces/demo.yaml", [])
    searcher, storage, _ = warm_searcher(study, store, seed=1)
    searcher.set_search_properties("val_kappa", "max", tune_param_space(study))
    config = searcher.suggest("new-trial")
    assert 3e-3 <= config["lr"] <= 3e-2
    seen = optuna.load_study(study_name="demo", storage=storage).trials
    by_id = {t.user_attrs.get("trial_id"): t for t in seen}
    assert set(by_id) == {"done", "pruned", "failed", None}  # None: the new trial, asked
    assert by_id["pruned"].state == optuna.trial.TrialState.PRUNED
    assert by_id["pruned"].intermediate_values == {1: 0.05, 2: 0.2}  # TPE ranks it by 0.2
    assert by_id["done"].value == pytest.approx(0.5)
