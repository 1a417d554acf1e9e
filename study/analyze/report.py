"""Assemble one study's report — its sections in one self-contained HTML file — and the
index page of a folder of studies. Plotly's JavaScript is inlined once; every figure after it
is a `<div>` plus its `Plotly.newPlot` call."""

from __future__ import annotations

import datetime as dt
import html
import os
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from retina.errors import RetinaError
from study.analyze import (
    figures,
    figures_hparams,
    section_clinical,
    section_comparison,
    section_external,
    section_patients,
    tables,
)
from study.analyze.banners import LiveStatus, running_banner, skipped_pretrained_banner
from study.analyze.gallery import gallery_section
from study.analyze.importance import param_importances, varying
from study.analyze.load import StudyResults, read_predictions, search_view
from study.analyze.markup import compact, format_cell, html_table, key_values, page
from study.analyze.summary import build_summary
from study.record.ranking import rank_trials

SECTIONS = (
    ("summary", "1 Summary"),
    ("course", "2 Course-report table"),
    ("leaderboard", "3 Leaderboard"),
    ("curves", "4 Learning curves"),
    ("init", "5 Pretrained vs scratch"),
    ("hparams", "6 Hyperparameter effects"),
    ("confusion", "7 Confusion matrices"),
    ("stopping", "8 Early stopping"),
    ("comparison", "9 Comparison: seeds, intervals, tuning curves"),
    ("gallery", "10 What the best model gets wrong"),
    ("referable", "11 Referable DR: operating point, calibration, both eyes"),
    ("external", "12 External test sets"),
)
LABELS = {
    "trial_id": "trial", "best_epoch": "best epoch", "epochs_run": "epochs run",
    "stopped_early": "stopped early", "val_trial": "val: best trial", "test_trial": "test: trial",
    "val_vs_majority": "val acc − majority", "test_vs_majority": "test acc − majority",
    "course_test_acc": "course report test acc", "majority_share": "majority share (grade 0)",
    "planned_epochs": "planned epochs", "stop_rung": "stopped at epoch (rung)",
    "saved_epochs": "epochs saved", "stopped_trials": "trials stopped",
    "like_majority": "≈ predicts grade 0 only", "test_kappa_1view": "test kappa, 1 view",
}  # fmt: skip
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _label(column: str) -> str:
    if column in LABELS:
        return LABELS[column]
    for prefix, say in (("best_val_", "val "), ("test_", "test "), ("val_", "val ")):
        if column.startswith(prefix):
            return say + column[len(prefix) :].replace("_", " ")
    return column.replace("_", " ")


class _Figures:
    """Numbers the figure divs and turns each figure into HTML without the library."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure) -> str:
        self.count += 1
        div = fig.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"fig-{self.count}", config=PLOT_CONFIG
        )
        return f'<div class="figure">{div}</div>'


def _table(df, **kw) -> str:
    return html_table(df, {c: _label(c) for c in df.columns}, **kw)


def _summary(study: StudyResults, ranked, totals: dict) -> str:
    trials, cfg = study.trials, study.meta.get("config") or {}
    counts = tables.status_counts(trials)
    parts = [skipped_pretrained_banner(study.meta)]
    parts.append(f"<p class='note'>Results folder {html.escape(str(study.folder))}.</p>")
    problems = trials[trials["status"] != "TERMINATED"]
    if not problems.empty or trials["error"].notna().any():
        lines = [f"{n} trial(s) {s}" for s, n in counts.items() if s != "TERMINATED"]
        parts.append(
            "<p class='warn'>Not every trial finished: " + html.escape(", ".join(lines) or "errors")
            + ". RUNNING/PENDING trials mean the sweep is still running or was stopped; the report"
            " shows every finished epoch. They are marked in the leaderboard.</p>"
        )  # fmt: skip
    data = study.meta.get("data") or {}
    shown = (
        "path",
        "layout",
        "image_size",
        "preprocessing",
        "split_seed",
        "dataset_hash",
        "skipped",
    )
    parts.append("<h3>Data</h3>" + key_values({k: data[k] for k in shown if k in data}))
    parts.append(_table(tables.data_table(study.class_counts), sortable=False))
    parts.append("<h3>Study</h3>")
    setup = {"metric": f"{study.metric} ({study.mode})", "space": cfg.get("space", "—")}
    keys = ("search", "scheduler", "seeds", "num_samples", "versions", "git_rev", "created")
    for key in (*keys, "space_file"):
        value = study.meta.get(key, cfg.get(key))
        if value is not None:
            setup[key] = value
    setup["trials by status"] = counts
    setup["compute"] = (
        f"{totals['trial_epochs']} trial-epochs; trial hours on GPU {totals['gpu_hours']:.2f}, "
        f"on CPU {totals['cpu_hours']:.2f}"
        + (f", elsewhere {totals['other_hours']:.2f}" if totals["other_hours"] else "")
    )
    parts.append(key_values(setup))
    best = ranked.iloc[0] if ranked[study.score_column].notna().any() else None
    parts.append("<h3>Best trial</h3>")
    if best is None:
        parts.append("<p class='note'>No trial has a value of the study metric yet.</p>")
    else:
        info = {"trial": f"{best['trial_id']} ({best['status']}), best epoch {best['best_epoch']}"}
        info["config"] = figures.config_text(best, study.hyperparameters)
        for split, prefix in (("val", "best_val_"), ("test", "test_")):
            info[split] = ", ".join(
                f"{m.replace('_', ' ')} {format_cell(prefix + m, best[prefix + m])}"
                for m in tables.REPORTED_METRICS
            )
        info["test-time augmentation"] = tables.test_time_views(best, int(cfg.get("tta", 1)))
        parts.append(key_values(info))
    failed = trials[trials["error"].notna()]
    if not failed.empty:
        parts.append("<h3>Errors</h3>" + _table(failed[["trial_id", "status", "error"]]))
    return "".join(parts)


def _hparams(study: StudyResults, figs: _Figures) -> str:
    finished = tables.finished_trials(study.trials, study.score_column)
    space = (study.meta.get("config") or {}).get("space") or {}
    if finished.empty:
        return "<p class='note'>No finished trial yet: nothing to compare.</p>"
    metric = study.metric
    # settings every finished trial shares are named once instead of drawn as flat axes
    hp = varying(finished, study.hyperparameters) or study.hyperparameters
    fixed = {h: finished[h].iloc[0] for h in study.hyperparameters if h not in hp}
    shared = ", ".join(f"{h}={figures.format_value(v)}" for h, v in fixed.items())
    out = [
        f"<p class='note'>{len(finished)} finished trials (TERMINATED, with a {metric})"
        + (f"; the same in all of them: {html.escape(shared)}" if fixed else "")
        + ".</p>"
    ]
    out.append(figs.html(figures_hparams.parallel_coordinates(finished, hp, metric, space)))
    out.append(figs.html(figures_hparams.metric_vs_hyperparameters(finished, hp, metric, space)))
    imp = param_importances(finished, study.hyperparameters, metric, study.mode, space)
    out.append(f"<h3>Importance — {html.escape(imp.method)}</h3>")
    out.append(f"<p class='note'>{html.escape(imp.note)}</p>")
    if imp.values:
        out.append(figs.html(figures_hparams.importance_figure(imp.values, imp.method)))
    return "".join(out)


def _confusion(study: StudyResults, ranked, top_k: int, figs: _Figures) -> str:
    best = ranked[ranked[study.score_column].notna()].head(top_k)
    if best.empty:
        return "<p class='note'>No trial has a value of the study metric yet.</p>"
    out = [f"<p class='note'>The best {len(best)} trial(s) by {study.metric}: val at the best "
           "epoch, test where the trial was evaluated on it. Rows: true grade.</p>"]  # fmt: skip
    for _, trial in best.iterrows():
        tid = trial["trial_id"]
        runs = [
            ("val", int(trial["best_epoch"])),
            ("test", tables.tested_epoch(study.confusion, tid)),
        ]
        for split, epoch in runs:
            matrix = (
                None
                if epoch is None
                else tables.confusion_matrix(study.confusion, tid, split, epoch)
            )
            if matrix is None:
                if split == "val":
                    out.append(f"<p class='note'>{html.escape(tid)}: no val matrix recorded.</p>")
                continue
            title = f"{tid} — {split}, epoch {epoch} ({figures.config_text(trial, study.hyperparameters)})"
            out.append(figs.html(figures.confusion_figure(matrix, title)))
    return "".join(out)


def _stopping(study: StudyResults, figs: _Figures) -> str:
    per, t = tables.early_stopping(study.trials)
    scheduler = study.meta.get("scheduler") or (study.meta.get("config") or {}).get("scheduler")
    out = [
        f"<p>Scheduler: {html.escape(compact(scheduler))}. {t['stopped']} of {t['trials']} trials "
        f"were stopped early. Compute saved: <b>{t['saved_epochs']} trial-epochs</b> "
        f"({format_cell('saved_share', t['saved_share'])} of the {t['planned_epochs']} trial-epochs "
        f"that running every trial to its maximum epochs would take); {t['run_epochs']} run"
        + (f", {t['unfinished_epochs']} not run because trials failed or are still running"
           if t["unfinished_epochs"] else "")
        + ".</p>"
    ]  # fmt: skip
    rungs = tables.rung_counts(per)
    if not rungs.empty:
        out.append(_table(rungs, sortable=False))
    out.append(figs.html(figures.early_stopping_figure(per)))
    out.append(_table(per, row_classes=[f"status-{s}" for s in per["status"]]))
    return "".join(out)


def build_report(
    study: StudyResults,
    top_k: int = 3,
    summary: dict | None = None,
    live: LiveStatus | None = None,
) -> str:
    """The whole report as one HTML string; `summary` (study.analyze.summary) is computed
    here when the caller has not (the CLI computes it once and also writes it); `live`: a
    running sweep's snapshot (banner, reload)."""
    if summary is None:
        summary = build_summary(study, read_predictions(study.folder))
    study = search_view(study)  # the other sections describe the search; the summary, all runs
    figs = _Figures()
    trials = study.trials
    ranked = rank_trials(trials, study.score_column, study.mode)
    baselines = {s: tables.majority_share(study.class_counts, s) for s in ("train", "val", "test")}
    totals = tables.compute_totals(trials, study.epochs)
    views = int((study.meta.get("config") or {}).get("tta", 1))  # a study from before tta: 1
    board = tables.leaderboard(trials, study.hyperparameters, study.metric, study.mode, views)
    course = tables.course_table(trials, study.score_column, study.mode, study.class_counts)
    body = {
        "summary": _summary(study, ranked, totals),
        "course": "<p class='note'>Per architecture and initialisation: the trial with the best "
        f"{study.metric} on val, and the best-on-val trial among those evaluated on test (test is "
        "never used to choose). The majority class predicts grade 0 for every image; the course "
        "report's numbers (EyePACS, 512 px) are for context.</p>"
        + _table(course, sortable=False, row_classes=[""] * (len(course) - 1) + ["baseline"]),
        "leaderboard": f"<p class='note'>Every trial, best {study.metric} first; click a header to "
        "sort.</p>" + _table(board, row_classes=[f"status-{s}" for s in board["status"]]),
        "curves": "<p class='note'>Buttons switch to loss or kappa; click a legend entry to hide a "
        "group; hover a line for the trial's config.</p>"
        + figs.html(
            figures.learning_curves(study.epochs, trials, study.hyperparameters, baselines)
        ),
        "init": figs.html(figures.pretrained_vs_scratch(trials, study.metric, baselines)),
        "hparams": _hparams(study, figs),
        "confusion": _confusion(study, ranked, top_k, figs),
        "stopping": _stopping(study, figs),
        "comparison": section_comparison.comparison_section(summary, figs.html),
        "gallery": gallery_section(study.folder),
        "referable": section_clinical.clinical_section(summary, figs.html)
        + section_patients.patients_section(summary),
        "external": section_external.external_section(summary, figs.html),
    }
    now = dt.datetime.now().astimezone()
    when = now.strftime("%Y-%m-%d %H:%M %Z")
    parts = [running_banner(trials, live, now)] if live else []
    parts += [f"<h1>Study {html.escape(study.name)}</h1><p class='note'>Report written {when} by "
             "python -m study.analyze.</p>"]  # fmt: skip
    for anchor, title in SECTIONS:
        parts.append(
            f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body[anchor]}</section>'
        )
    return page(
        f"{study.name} — retina study report", list(SECTIONS), "".join(parts), get_plotlyjs()
    )


def build_index(entries: list[tuple[str, Path | None, str]], folder: Path) -> str:
    """A page linking each study's report: (name, report path or None, note) per study."""
    items = []
    for name, report, note in entries:
        link = (
            f'<a href="{html.escape(os.path.relpath(report, folder))}">{html.escape(name)}</a>'
            if report
            else html.escape(name)
        )
        items.append(f"<li>{link} <span class='note'>{html.escape(note)}</span></li>")
    body = f"<h1>Studies in {html.escape(str(folder))}</h1><ul>{''.join(items)}</ul>"
    return page("retina studies", [], body, None)


def write_atomic(path: Path, text: str) -> None:
    """Write next to `path`, then rename over it: a reader never sees half a report."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise RetinaError(
            f"cannot write {path} ({exc.strerror}); choose a writable file with --out FILE"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except OSError as exc:  # e.g. --out names a folder, or the disk is full
        Path(tmp).unlink(missing_ok=True)
        raise RetinaError(
            f"cannot write {path} ({exc.strerror}); choose a writable file with --out FILE"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
