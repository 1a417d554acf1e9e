"""The study as an Optuna storage: `results/<study>/optuna.log`, for `optuna-dashboard`.

    log = OptunaLog(folder, "demo", optuna_distributions(study), "max")
    store.mirrors.append(log)      # refreshed whenever the store writes its Parquet files
    optuna-dashboard results/demo/optuna.log

Written by the driver from its one results store (never by Ray's searcher): each ended search
trial of the store becomes a trial of the Optuna study `<name>` (each confirm run one of
`<name>-confirm`) with its params and their distributions, its val metric per epoch as
intermediate values (step = epoch), its state (ASHA-stopped: PRUNED, errored: FAIL, finished:
COMPLETE with the value the study ranks it by, its best epoch's), its start and end times, and
its trial id, stage, seed, best epoch and test metrics as user attributes. Trials that end
are appended, in the order they end, so a running optuna-dashboard shows them as they come; a
change to a trial already there (its held-out test, at the end) and the first refresh of a
driver (--resume, --more) rebuild the file whole (temp file, rename): never a duplicate trial,
never half a file.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study.record.layout import ENDED, OPTUNA_LOG, Stage, Status

CONFIRM_SUFFIX = "-confirm"  # the Optuna study of the confirm runs, beside the search's


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _when(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(float(seconds))


def _end(info: Mapping) -> float:
    """When a trial ended (its start plus its seconds in a journal from before `at`)."""
    return info.get("ended") or (info.get("started") or 0) + float(info.get("seconds") or 0.0)


class OptunaLog:
    """`optuna.log` of the study in `folder`, named `name`, kept current from a results store.
    `distributions`: the searched dimensions (study.define.optuna_space); `mode`: max or min."""

    def __init__(self, folder: Path, name: str, distributions: Mapping, mode: str):
        self.path = Path(folder) / OPTUNA_LOG
        self.name, self.distributions = name, dict(distributions)
        self.direction = "maximize" if mode == "max" else "minimize"
        self._seen: tuple | None = None  # the store's ended trials when last refreshed
        self._held: dict[str, list] = {}  # stage -> _key of each trial in the file, in order
        self._storage = None  # the file, open, to append to

    @staticmethod
    def _signature(store) -> tuple:
        """The ended trials and which were tested: the file changes only when this does."""
        return tuple(
            (t, info.get("status"), "test" in info)
            for t, info in sorted(store.trials.items())
            if info.get("status") in ENDED
        )

    @staticmethod
    def _key(trial) -> tuple:
        return (trial.state, trial.value, sorted(trial.params.items()),
                sorted(trial.intermediate_values.items()), sorted(trial.user_attrs.items()))  # fmt: skip

    def refresh(self, store) -> None:
        """Bring the file up to date if a trial ended or was tested since the last refresh:
        trials that ended since are appended (a running optuna-dashboard reads them as they
        come); a change to a trial already written (its test) rebuilds the file."""
        signature = self._signature(store)
        if signature == self._seen:
            return
        wanted = {stage: self.frozen_trials(store, stage) for stage in Stage}
        keys = {stage: [self._key(t) for t in trials] for stage, trials in wanted.items()}
        held = self._held
        if self._storage is not None and all(
            keys[stage][: len(held.get(stage, []))] == held.get(stage, []) for stage in Stage
        ):
            self._append(
                {stage: trials[len(held.get(stage, [])) :] for stage, trials in wanted.items()}
            )
        else:
            self.write(store)
        self._seen, self._held = signature, keys

    def _studies(self, storage):
        import optuna

        for stage, name in ((Stage.SEARCH, self.name), (Stage.CONFIRM, self.name + CONFIRM_SUFFIX)):
            yield (
                stage,
                lambda name=name: optuna.create_study(
                    storage=storage, study_name=name, direction=self.direction, load_if_exists=True
                ),
            )

    def _append(self, new: dict[str, list]) -> None:
        for stage, study in self._studies(self._storage):
            if new[stage]:
                study().add_trials(new[stage])

    def frozen_trials(self, store, stage: str) -> list:
        """Optuna's record of every ended trial of `stage` in `store`, in the order they ended."""
        import optuna

        frame = store.trials_frame().set_index("trial_id")
        metric = store.metric
        per_trial: dict[str, dict[int, float | None]] = {}
        for (t, epoch), epoch_row in store.epochs.items():
            per_trial.setdefault(t, {})[int(epoch)] = _finite(epoch_row.get(metric))
        out = []
        # In the order they ended: the trials that end later are appended (see refresh).
        trials = sorted(store.trials.items(), key=lambda item: (_end(item[1]), item[0]))
        for trial_id, info in trials:
            if info.get("status") not in ENDED or info.get("stage", Stage.SEARCH) != stage:
                continue
            row = frame.loc[trial_id]
            params, dists = {}, {}
            for name, dist in self.distributions.items():
                value = (info.get("config") or {}).get(name)
                try:
                    dist.to_internal_repr(value)  # a value outside it (an edited space): left out
                except (ValueError, TypeError):
                    continue
                params[name], dists[name] = value, dist
            steps = per_trial.get(trial_id, {})
            best = _finite(row.get(f"best_{metric}"))
            if info.get("status") == Status.ERROR or (best is None and not row["stopped_early"]):
                state, value = optuna.trial.TrialState.FAIL, None
            elif bool(row["stopped_early"]):
                state, value = optuna.trial.TrialState.PRUNED, None
            else:
                state, value = optuna.trial.TrialState.COMPLETE, best
            started, ended = info.get("started"), _end(info)
            attrs = {"trial_id": trial_id, "stage": str(stage), "seed": info.get("seed")}
            attrs["best_epoch"] = int(row["best_epoch"])
            attrs |= {f"test_{k}": v for k, v in (info.get("test") or {}).items()}
            if info.get("error"):
                attrs["error"] = str(info["error"])
            out.append(
                optuna.trial.create_trial(
                    state=state,
                    value=value,
                    params=params,
                    distributions=dists,
                    intermediate_values={e: v for e, v in sorted(steps.items()) if v is not None},
                    user_attrs={k: v for k, v in attrs.items() if v is not None},
                    system_attrs={},
                )
            )
            if started is not None:  # else create_trial's now (a journal from before `at`)
                out[-1].datetime_start = _when(started)
                out[-1].datetime_complete = _when(ended)
        return out

    def write(self, store) -> None:
        """The whole file from `store`, in a temp file renamed over the old one."""
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study made
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.unlink(missing_ok=True)
        storage = JournalStorage(JournalFileBackend(str(tmp)))
        for stage, study in self._studies(storage):
            trials = self.frozen_trials(store, stage)
            if stage == Stage.SEARCH or trials:  # no empty confirm study in the dashboard
                study().add_trials(trials)
        os.replace(tmp, self.path)
        self._storage = JournalStorage(JournalFileBackend(str(self.path)))
