"""The one place that touches Ray Tune's private internals, each use with why.

Everything else in the harness uses Ray's public API (`tune.Tuner`, `Tuner.restore` /
`can_restore`, `ResultGrid`, `tune.Callback`, `tune.report`). Where no public API exists, the
private attribute is read here, and only here, so a Ray upgrade is checked in one file:
`TESTED_RAY` names the releases these uses were read against, and `check_ray_version` (called
when the sweep starts Ray) refuses another release with the fix. tests/test_ray_boundary.py
checks each attribute on the installed Ray.

    check_ray_version()                        # before ray.init
    config = run_config_of(tuner)              # the restored Tuner's RunConfig
"""

from __future__ import annotations

import os

import ray

from retina.errors import RetinaError

# Minor releases whose internals the uses below were read against (and the suite passed on).
TESTED_RAY = ("2.60",)
# Set to 1 to run on another Ray release anyway, at the user's risk (and say so).
ALLOW_ENV = "RETINA_ALLOW_UNTESTED_RAY"


def ray_minor(version: str | None = None) -> str:
    return ".".join((version or ray.__version__).split(".")[:2])


def check_ray_version(version: str | None = None) -> None:
    """Refuse a Ray release the private uses below were not checked against."""
    if ray_minor(version) in TESTED_RAY or os.environ.get(ALLOW_ENV) == "1":
        return
    raise RetinaError(
        f"Ray {version or ray.__version__} is installed, but this harness was tested with Ray "
        f"{', '.join(TESTED_RAY)} (it reads a few of Tune's internals, study/run/ray_private.py): "
        f"install the tested one with `make install` (the lock), or set {ALLOW_ENV}=1 to try "
        "this one at your own risk"
    )


def run_config_of(tuner):
    """The `RunConfig` a restored Tuner will run with (mutable: `fit` reads it).

    Why private: Tune restores the pickled callbacks of the interrupted session and has no
    public way to change them; the session that resumes must apply its own (its results store,
    its --mlflow).
    """
    return tuner._local_tuner.get_run_config()


def trials_of(grid) -> list:
    """The fitted experiment's `Trial` objects, in the `ResultGrid`'s own order.

    Why private: a trial's final status (TERMINATED / ERROR) and its id in `grid[i]`'s order
    are not on the public `ResultGrid`; `ExperimentAnalysis.trials` is the same list.
    """
    return grid._experiment_analysis.trials


def driver_staging_path(trial) -> str | None:
    """The local folder where Tune's driver stages its experiment snapshot before copying it
    into `results/<study>/tune/` (study.run.snapshot keeps a whole copy of it).

    Why private: the staging folder is an attribute of Ray Train's `StorageContext`; no public
    API says where, or when, the snapshot was written.
    """
    storage = getattr(trial, "storage", None)
    return getattr(storage, "experiment_driver_staging_path", None)


def prefill_rungs(scheduler, rewards: dict[str, dict[int, float]], mode: str) -> int:
    """Record earlier trials' results in an ASHA scheduler's rungs, as if it had judged them:
    `rewards` is trial id -> {epoch: metric}; returns how many rung entries it recorded.

    Why private: `--more` runs new trials in a new Tune experiment, and ASHA must stop them
    against the rungs the earlier trials reached (a new trial is judged against the whole
    study); `AsyncHyperBandScheduler` has no public way to be given results it did not see.
    Each bracket's `_rungs` is [(milestone, {trial id: reward})], the reward the metric times
    +1 (max) or -1 (min), recorded at the first result at or past the milestone.
    """
    op = 1.0 if mode == "max" else -1.0
    count = 0
    for bracket in scheduler._brackets:
        for milestone, recorded in bracket._rungs:
            for trial_id, by_epoch in rewards.items():
                reached = sorted(e for e in by_epoch if e >= milestone)
                if reached:
                    recorded[trial_id] = op * float(by_epoch[reached[0]])
                    count += 1
    return count
