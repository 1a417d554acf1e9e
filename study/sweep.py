"""Run a study: `python -m study.sweep search_spaces/demo.yaml [--set num_samples=2 ...]`.

The study's lifecycle, top to bottom in `sweep`: load the YAML -> preflight (the space, the
data, the decode-once cache, before Ray starts) -> lock the results folder -> start or join
Ray (dashboard on 127.0.0.1) -> the Tune search with a live progress table -> the conclusion
(held-out test, predictions, confirm stage, summary, export, gallery, clean-up;
study.conclude.pipeline) -> the leaderboard and the report. `--resume` continues an interrupted
study; a finished one run again says so; `--more N` grows it by N warm-started trials and
`--more-seeds K` by K seeds in each confirm cell (docs/growing.md). While it runs,
results/<study>/report.html is rewritten in the background (`--report-every S`, 0: off);
`--mlflow [URI]` also logs every trial to MLflow.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import sys
from pathlib import Path

from retina.cli import run_command
from retina.errors import RetinaError
from study.define.schema import StudyConfig, hyperparameter_names, load_study, study_to_dict
from study.record.layout import STUDY_JSON
from study.record.study_state import finished_at
from study.run.live_report import CPU_SHARE
from study.run.mlflow_option import DEFAULT_URI as DEFAULT_MLFLOW_URI
from study.run.mlflow_option import mlflow_callback, require_mlflow, tracking_uri

LOCAL_DASHBOARD_HOST = "127.0.0.1"
NO_DASHBOARD = "off"  # --dashboard-host off: a Ray without its dashboard (CI, scripted runs)
EXPOSED_WARNING = (
    "warning: the Ray dashboard listens on {host}. Ray's dashboard and Jobs API run code for "
    "anyone who reaches them: keep Ray's token authentication on and the network trusted, "
    "or use the default 127.0.0.1 with an SSH tunnel."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.sweep", description=__doc__.splitlines()[0])
    p.add_argument("space", help="a YAML search space, e.g. search_spaces/demo.yaml")
    p.add_argument("--data", help="data folder (overrides data.path of the space)")
    p.add_argument("--results", default="results", help="parent folder of results/<study>")
    p.add_argument("--name", help="study name (overrides the space's name)")
    p.add_argument("--address", help="join a running Ray cluster: auto or ray://HOST:PORT")
    p.add_argument("--resume", action="store_true", help="continue the study in its folder")
    p.add_argument(
        "--more",
        type=int,
        default=0,
        metavar="N",
        help="add N search trials to a finished study, the searcher and ASHA warm-started from "
        "every earlier trial; the conclusion then runs again over all trials (docs/growing.md)",
    )
    p.add_argument(
        "--more-seeds",
        type=int,
        metavar="K",
        help="a finished study: train K more seeds of every confirm cell, keeping the earlier "
        "runs, then recompute the summary and report (docs/growing.md)",
    )
    p.add_argument(
        "--cells",
        metavar="KEY=VALUE,...",
        help="with --more-seeds: only the confirm cells with these values, e.g. head=classify",
    )
    p.add_argument(
        "--storage",
        metavar="URI",
        help="where Ray writes trial folders and checkpoints: a folder, or s3://BUCKET/PREFIX "
        "(?endpoint_override=http://HOST:PORT for MinIO/Ceph; credentials from AWS_* variables)"
        "; default: the results folder (overrides storage: of the space; docs/cluster-storage.md)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field by dotted path, e.g. --set space.pretrained=false",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out images that cannot be used, listed in the cache's meta.json "
        "(the same as --set data.skip_bad=true)",
    )
    p.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an external test set (repeatable), added to the space's external: list; the "
        "winner and the confirm runs are tested once on it",
    )
    p.add_argument("--cache-dir", help="decode-once cache root (default $RETINA_CACHE or ~/.cache)")
    p.add_argument(
        "--dashboard-host",
        default=LOCAL_DASHBOARD_HOST,
        help="interface for the Ray dashboard (default 127.0.0.1: local only; off: none, which "
        "saves its ~4 CPU-s start and its memory, e.g. in CI)",
    )
    p.add_argument(
        "--report-every",
        type=float,
        default=30.0,
        metavar="S",
        help="rewrite results/<study>/report.html at most every S seconds while it runs (0: off)",
    )
    p.add_argument(
        "--report-cpu",
        type=float,
        default=100 * CPU_SHARE,
        metavar="PCT",
        help=f"the live renders may use at most PCT %% of this machine's CPU (default "
        f"{100 * CPU_SHARE:g}; 100 where the trials run on other machines)",
    )
    p.add_argument(
        "--mlflow",
        nargs="?",
        const=DEFAULT_MLFLOW_URI,
        metavar="URI",
        help=f"log every trial to MLflow (default {DEFAULT_MLFLOW_URI}, a local file store)",
    )
    return p.parse_args(argv)


def load(args: argparse.Namespace) -> StudyConfig:
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.name:
        overrides.append(f"name={args.name}")
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    if args.storage:
        overrides.append(f"storage={args.storage}")
    return load_study(args.space, overrides, args.external)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study = load(args)
    if args.report_every < 0:
        raise RetinaError(f"--report-every {args.report_every:g}: give seconds >= 0 (0: off)")
    if not 0 < args.report_cpu <= 100:
        raise RetinaError(f"--report-cpu {args.report_cpu:g}: give a percent in (0, 100]")
    if args.more and args.resume:
        raise RetinaError(
            "--more and --resume: give one (--resume continues a --more that stopped)"
        )
    if args.mlflow is not None:
        require_mlflow()  # before any work: a missing extra is a one-line fix
    if args.more_seeds is not None:  # grows a finished study: its folder, as --resume
        if args.more:
            raise RetinaError(
                "--more and --more-seeds: give one per run (trials first, then seeds)"
            )
        if args.more_seeds < 1:
            raise RetinaError(f"--more-seeds {args.more_seeds}: give a number of seeds >= 1")
        args.resume = True
    elif args.cells:
        raise RetinaError("--cells chooses the cells of --more-seeds K: give it too")
    folder = Path(args.results).resolve() / study.name
    if args.more_seeds and not (folder / STUDY_JSON).exists():
        raise RetinaError(f"--more-seeds: {folder} holds no study; run it first without the flag")
    from study.record.disk import check_writable
    from study.record.storage import Storage
    from study.run.lock import StudyLock

    if study.storage is not None:  # a bad URI, bucket or credential: refused before any write
        Storage.resolve(study.storage, folder.parent).check()
    check_writable(folder.parent)  # a full or read-only disk is refused as the preflight says
    if not args.resume and not args.more and finished_at(folder):  # said, never touched
        from study.run.grow import finished_note
        from study.run.weights_policy import skip_missing_pretrained

        with contextlib.redirect_stderr(io.StringIO()):  # its warning is for a run, not this
            note = finished_note(args, skip_missing_pretrained(study)[0], folder)
        if note:
            print(note)
            return 0
    with StudyLock(folder) as lock:  # one driver per study: taken before anything in it changes
        lease = storage_lease(study, folder, lock.owner)  # and across machines, in a bucket
        try:
            code = sweep(args, study, folder)
        finally:
            if lease is not None:
                lease.release()
    if lock.lost:  # another driver took the study: this one stopped (study.run.lock)
        raise RetinaError(lock.lost)
    return code


def sweep(args: argparse.Namespace, study: StudyConfig, folder: Path) -> int:
    """The study, with its folder locked, top to bottom: preflight -> search -> conclude ->
    report. One results store is made here and handed to every part that records or reads."""
    # Whatever the user's umask, nothing written here (nor by the Ray processes started from
    # here) is writable by others: Ray unpickles tune/*.pkl on --resume.
    os.umask(os.umask(0) | 0o022)

    from study.record.disk import write_json_atomic
    from study.record.results import ResultsStore
    from study.record.study_json import external_record, study_record
    from study.record.study_state import add_growth, growth, mark_finished
    from study.run.grow import growth_study, optuna_log

    # torch is imported only once the YAML is valid
    from study.run.preflight import preflight, prepare_external_sets
    from study.run.weights_policy import skip_missing_pretrained

    # 1. preflight: the space, the data and the cache, before Ray starts
    study, skipped = skip_missing_pretrained(study)  # on_missing_weights: skip, offline
    if args.more:  # checked before any work; its num_samples the one the study ran with
        study = growth_study(study, folder, args.more)
    resolved = study_to_dict(study)
    cache_root = Path(args.cache_dir) if args.cache_dir else None
    mirror = restore_from_storage(study, folder, args.resume or bool(args.more))
    again = args.resume or bool(args.more)
    data = preflight(study, folder, resolved, again, cache_root, joins_cluster=bool(args.address))
    external = prepare_external_sets(study, data, cache_root)  # decoded once, like the data
    if args.more:
        add_growth(folder, args.more)  # unfinished until it concludes; --resume continues it
    elif not args.resume:
        record = study_record(study, resolved, data, args.space)
        record["skipped_pretrained"] = skipped
        record["external"] = external_record(external)
        write_json_atomic(folder / STUDY_JSON, record)
    print(f"study {study.name}: {data.class_counts()} images per split and grade -> {folder}")
    for name, ext in external.items():
        print(f"external set {name}: {ext.class_counts()['test']} images per grade ({ext.layout})")
    store = ResultsStore(folder, hyperparameter_names(study), study.metric.name, study.metric.mode)
    store.load()  # a resumed study keeps every epoch it already finished
    store.mirrors.append(optuna_log(study, folder))  # results/<study>/optuna.log, kept current
    if args.more_seeds:  # refused before Ray starts when there is nothing to grow
        from study.conclude.grow import check_growable, parse_cells

        check_growable(study, folder, store)
        wanted = parse_cells(args.cells, study.confirm.compare)
    if mirror is not None:  # after each Parquet rebuild, at its throttle
        store.after_flush, store.after_epoch = mirror.push_soon, mirror.push_journal

    # 2. Ray: imported only after the preflight passed
    import ray

    from study.conclude.leaderboard import leaderboard
    from study.conclude.pipeline import StudyRun, conclude_study
    from study.conclude.replan import stale_cells
    from study.run.experiment import experiment_finished, fit, results_by_trial
    from study.run.grow import grow_search
    from study.run.live_report import LiveReport
    from study.run.tuner import build_search_tuner, expected_trials, start_ray

    if args.dashboard_host not in (LOCAL_DASHBOARD_HOST, NO_DASHBOARD):
        print(EXPOSED_WARNING.format(host=args.dashboard_host), file=sys.stderr)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table honours our columns
    callbacks = []  # Ray Tune's own MLflowLoggerCallback; imports Ray, so only now
    if args.mlflow is not None:
        callbacks.append(mlflow_callback(tracking_uri(args.mlflow), study.name))
    start_ray(args.address, None if args.dashboard_host == NO_DASHBOARD else args.dashboard_host)
    grown = growth(folder)  # every --more: its trials and its own Tune experiment
    expected = expected_trials(study) + sum(step["trials"] for step in grown)
    live = LiveReport(folder, expected, args.report_every, args.report_cpu / 100)
    if args.report_every > 0:
        print(f"live report: {live.path} (rewritten at most every {args.report_every:g} s, "
              f"with at most {args.report_cpu / 100:.1%} of this machine's CPU)")  # fmt: skip
    try:
        with live:  # rewritten through the confirm stage too, until the final report
            if args.more_seeds:  # 3-4. a finished study: more confirm seeds, then the summary
                from study.conclude.grow import grow_seeds

                run = StudyRun(study, data, folder, store, {}, callbacks,
                               on_confirm_plan=live.expect_confirm, external=external)  # fmt: skip
                finished = grow_seeds(run, args.more_seeds, wanted)
            else:
                # 3. the search
                again = args.resume or bool(args.more)
                grid = fit(build_search_tuner(study, data, store, again, callbacks), folder)
                finished = experiment_finished(grid, expected_trials(study), store)
                results = results_by_trial(grid)
                if finished and grown:  # --more: each growth after the trials before it
                    finished = grow_search(study, data, store, grown, results, callbacks)
            # 4. the conclusion: test, predictions, confirm, summary, export, gallery, clean-up
            if finished and not args.more_seeds:
                run = StudyRun(study, data, folder, store, results, callbacks,
                               on_confirm_plan=live.expect_confirm, external=external)  # fmt: skip
                finished = conclude_study(run)
                if grown:  # the confirm stage is not re-planned: say where it lags
                    for line in stale_cells(study, store):
                        print(line)
            print(leaderboard(store, study.tta))
            # 5. the report, after the test results: without the live banner, by the render
            # process the live updates used (its imports paid once)
            live.final()
            if finished:  # run again, it says so instead of refusing (study.run.grow)
                mark_finished(folder)
    finally:
        store.close()
        ray.shutdown()
        if mirror is not None:  # the conclusion's files too, however the sweep ended
            mirror.push()
    print(f"results: {folder}")
    if mirror is not None:
        print(f"storage: results mirrored to {mirror.storage.uri} ({mirror.bytes_pushed} bytes "
              f"in {mirror.seconds:.1f} s)")  # fmt: skip
    if finished and run.export_failed:  # the last line of the sweep: the model is missing
        print(run.export_failed)
    if not finished:
        print(f"the study stopped before the end; continue it with:\n  {resume_command(args)}")
        return 130
    return 0


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues this study (a stopped --more-seeds with its seeds and cells)."""
    from study.run.grow import sweep_command

    extra = ["--resume"]
    if args.more_seeds:
        extra.append(f"--more-seeds {args.more_seeds}")
    if args.cells:
        extra.append(f"--cells {shlex.quote(args.cells)}")
    return sweep_command(args, *extra)


def storage_lease(study: StudyConfig, folder: Path, owner: dict):
    """The study's lease in its bucket (study.record.mirror.StorageLease), taken; None
    without a bucket."""
    from study.record.mirror import StorageLease, mirror_for

    mirror = mirror_for(folder, study.storage)
    if mirror is None or mirror.storage.local:
        return None
    lease = StorageLease(mirror, owner)
    lease.acquire()
    return lease


def restore_from_storage(study: StudyConfig, folder: Path, resume: bool):
    """The mirror of `folder` to the study's storage (None without --storage); with --resume
    and an empty local folder, the study is first copied back from the storage."""
    from study.conclude.checkpoints import human_bytes
    from study.record.mirror import mirror_for

    mirror = mirror_for(folder, study.storage)
    if mirror is None:
        return None
    if resume and not (folder / STUDY_JSON).exists():
        files, size = mirror.restore()
        print(f"restored {folder} from {mirror.storage.uri}: {files} files, {human_bytes(size)}")
    elif not resume and mirror.holds_study():
        raise RetinaError(
            f"storage {mirror.storage.uri} already holds the study {folder.name}; continue it "
            "with --resume, or start a new one with --name NEW_NAME"
        )
    return mirror


if __name__ == "__main__":
    run_command(main)
