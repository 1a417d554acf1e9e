"""What a study does after its search, in order, in the driver (Ray still up).

    held-out test of the best K on val -> per-image predictions
    -> confirmation runs (study.conclude.confirm)
    -> the best and every confirm run tested once on each external set (study.conclude.external)
    -> summary.json (the comparison)
    -> export the best (results/<study>/best/)
    -> gallery of the best trial's errors -> delete the checkpoints no longer needed (last)

Every step takes the one `StudyRun` (the study, its data and folder, the driver's results
store, Ray's results of the search by trial) and returns the lines it prints, so the flow of
the end of a study reads top to bottom in `STEPS`. Every step may be rerun by `--resume` after
a kill; the confirm step is the one that can be interrupted (a Ctrl-C in its fit).

    run = StudyRun(study, data, folder, store, results_by_trial(grid))
    finished = conclude_study(run)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from retina.prepare import PreparedData
from study.conclude.checkpoints import drop_unneeded_checkpoints
from study.conclude.confirm import run_confirm
from study.conclude.export import export_winner
from study.conclude.external import test_external_sets
from study.conclude.gallery import make_gallery
from study.conclude.holdout import evaluate_best_trials
from study.conclude.per_image import write_search_predictions
from study.conclude.summary_file import write_summary
from study.define.schema import StudyConfig
from study.record.results import ResultsStore


@dataclass
class StudyRun:
    """One study's conclusion context, made once by the lifecycle (study.sweep)."""

    study: StudyConfig
    data: PreparedData
    folder: Path
    store: ResultsStore  # the driver's one store: every step records and reads here
    results_by_id: dict  # trial id -> Ray's `Result` of the search
    callbacks: Sequence = ()  # the search's extra Tune callbacks, for the confirm runs too
    on_confirm_plan: Callable[[int], None] | None = None  # told how many confirm runs
    tested: dict = field(default_factory=dict)  # trial id -> test metrics, by the held-out test
    interrupted: bool = False  # a step was stopped (Ctrl-C): the rest waits for --resume
    export_failed: str | None = None  # the sweep's closing line when the export failed
    external: dict[str, PreparedData] = field(default_factory=dict)  # external test sets
    confirm_results: dict = field(default_factory=dict)  # trial id -> Ray's `Result`, confirm


class Interrupted(Exception):
    """A step was stopped before its end; `--resume` continues it."""


def held_out_test(run: StudyRun) -> Iterable[str]:
    if run.study.test_top_k <= 0:
        return []
    lines, run.tested = evaluate_best_trials(run.store, run.results_by_id, run.data, run.study)
    return ["held-out test of the best trials (chosen on val):", *(f"  {x}" for x in lines)]


def search_predictions(run: StudyRun) -> Iterable[str]:
    return write_search_predictions(run.store, run.results_by_id, run.data, run.folder, run.tested)


def confirm(run: StudyRun) -> Iterable[str]:
    # Prints as it goes (its Tune table comes in between); a stop leaves the rest to --resume.
    results = run_confirm(
        run.study, run.data, run.folder, run.store, run.callbacks, run.on_confirm_plan
    )
    if results is None:
        raise Interrupted
    run.confirm_results = results
    return []


def external_tests(run: StudyRun) -> Iterable[str]:
    # After confirm, before the summary: summary.json states them (and may compare on one).
    return test_external_sets(
        run.study, run.data, run.external, run.folder, run.store,
        {**run.results_by_id, **run.confirm_results},
    )  # fmt: skip


def summary(run: StudyRun) -> Iterable[str]:
    # Before the export: the model card states the comparison's intervals.
    return [write_summary(run.folder, run.store)]


def export(run: StudyRun) -> Iterable[str]:
    if not run.study.export:
        return [f"export: off (export: false); python -m study.export {run.folder} makes best/"]
    lines, run.export_failed = export_winner(run.folder, run.data, run.store.trials_frame())
    return ["export of the best trial:", *(f"  {x}" for x in lines)]


def gallery(run: StudyRun) -> Iterable[str]:
    # After the held-out test: the gallery shows test images when the best trial was tested.
    return [make_gallery(run.study, run.data, run.folder, run.store, run.results_by_id)]


def checkpoints(run: StudyRun) -> Iterable[str]:
    # Last: every step before may read checkpoints.
    result = drop_unneeded_checkpoints(run.study, run.folder, run.store, run.results_by_id)
    return [result.line()]


STEPS: tuple[Callable[[StudyRun], Iterable[str]], ...] = (
    held_out_test,
    search_predictions,
    confirm,
    external_tests,
    summary,
    export,
    gallery,
    checkpoints,
)


def conclude_study(run: StudyRun) -> bool:
    """Every step after a finished search, in order; False when one was interrupted (the
    study is then continued by --resume)."""
    for step in STEPS:
        try:
            lines = step(run)
        except Interrupted:
            run.interrupted = True
            return False
        for line in lines:
            print(line)
    return True
