"""The Ray boundary: the installed Ray is one the private uses were read against, each private
attribute still exists there, and no module outside study/run/ray_private.py reaches in."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import ray
from ray.train._internal.storage import StorageContext
from ray.tune import ResultGrid, Tuner
from ray.tune.impl.tuner_internal import TunerInternal

from retina.errors import RetinaError
from study.run import ray_private

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_ray_is_one_the_boundary_was_checked_against():
    assert ray_private.ray_minor() in ray_private.TESTED_RAY, (
        f"Ray {ray.__version__} is not in TESTED_RAY {ray_private.TESTED_RAY}: read each use in "
        "study/run/ray_private.py against this release (and run the reliability tests), then "
        "add it to TESTED_RAY and the lock"
    )


def test_each_private_attribute_exists_in_the_installed_ray():
    assert "_local_tuner" in inspect.getsource(Tuner.__init__)
    assert callable(TunerInternal.get_run_config)
    assert "_experiment_analysis" in inspect.getsource(ResultGrid.__init__)
    assert isinstance(
        inspect.getattr_static(StorageContext, "experiment_driver_staging_path"), property
    )


def test_an_unknown_ray_release_is_refused_with_the_fix(monkeypatch):
    monkeypatch.delenv(ray_private.ALLOW_ENV, raising=False)
    with pytest.raises(RetinaError, match=r"Ray 9\.1\.0 is installed.*tested with Ray 2\.60.*"):
        ray_private.check_ray_version("9.1.0")
    monkeypatch.setenv(ray_private.ALLOW_ENV, "1")
    ray_private.check_ray_version("9.1.0")  # the user's explicit choice


def test_no_private_ray_attribute_outside_the_boundary_module():
    private = re.compile(r"\._local_tuner|\._experiment_analysis|experiment_driver_staging_path")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "study").rglob("*.py")) + sorted((ROOT / "retina").rglob("*.py"))
        if path.name != "ray_private.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert not found, f"private Ray attributes outside study/run/ray_private.py: {found}"


def test_asha_prefilled_with_earlier_trials_judges_a_new_one_against_them():
    # --more: ASHA of the new experiment holds the earlier trials' results at each rung.
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(
        time_attr="training_iteration", max_t=3, grace_period=2, reduction_factor=2
    )
    asha.set_search_properties("val_kappa", "max")
    earlier = {"a": {1: 0.1, 2: 0.5, 3: 0.6}, "b": {1: 0.0, 2: 0.4}}
    assert ray_private.prefill_rungs(asha, earlier, "max") == 2  # one rung (epoch 2), 2 trials
    weak, strong = Trial("__fake", stub=True), Trial("__fake", stub=True)
    for trial, kappa, action in ((weak, 0.1, "STOP"), (strong, 0.9, "CONTINUE")):
        asha.on_trial_add(None, trial)
        result = {"training_iteration": 2, "val_kappa": kappa}
        assert asha.on_trial_result(None, trial, result) == action
