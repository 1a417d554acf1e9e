"""The report's section on external test sets, from summary.json's `external` key: per set, the
best trial's and each confirm run's kappa, accuracy, referable AUROC and the val-chosen
operating point's sensitivity / specificity (patient-bootstrap intervals for the best trial),
the best trial's confusion matrix, and the set's grade shares beside the development test's.
Pure: dict in, HTML and figures out.

    html = external_section(build_summary(study, predictions), figure_to_html)
"""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go

from study.analyze.markup import html_table
from study.analyze.section_clinical import _ci, _num, _pct, bootstrap_note

GRADES = ["0", "1", "2", "3", "4"]
HOW_TO_READ = """<p class='note'><b>How to read this.</b> An external set comes from
elsewhere (other cameras, clinics, graders). Each run is tested on it once, as on the held-out
test: the size it trained at, the study's preprocessing and test-time views, and everything
chosen on the development validation split (a regress head's cuts, the temperature, the
referable threshold). Nothing is fitted on the external set, so a drop from the development
test is what a user of the model on such data would see. Intervals resample the set's
patients.</p>"""


def _with_ci(value, ci, digits: int = 3) -> str:
    lo, hi = ci if ci else (None, None)
    text = _num(value, digits)
    return text if lo is None or hi is None else f"{text} [{_num(lo, digits)}, {_num(hi, digits)}]"


def runs_frame(block: dict) -> pd.DataFrame:
    """One row per run (best, then confirm) on one set."""
    rows = []
    for role, run in [("best", block["best"])] + [("confirm", r) for r in block["confirm"]]:
        if run is None:
            continue
        ref, dev = run["referable"], run.get("development_test") or {}
        image = ref["test_image"]
        rows.append({
            "run": f"{run['trial_id']} ({role})",
            "kappa": _with_ci(run["kappa"], run["kappa_ci"]),
            "kappa, development test": _num(dev.get("kappa")),
            "accuracy": _with_ci(run["acc"], run["acc_ci"]),
            "referable AUROC": _with_ci(ref["auroc"], ref["auroc_ci"]),
            "sensitivity": _pct(image["sensitivity"]) + _ci(image["sensitivity_ci"]),
            "specificity": _pct(image["specificity"]) + _ci(image["specificity_ci"]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def shares_frame(block: dict) -> pd.DataFrame:
    """Tidy grade shares: one row per (data, grade)."""
    labels = {"external": "external set", "development_test": "development test"}
    return pd.DataFrame(
        [{"data": labels[key], "grade": g, "share": share}
         for key, shares in block["grade_shares"].items() if shares
         for g, share in zip(GRADES, shares, strict=True)]
    )  # fmt: skip


def shares_figure(shares: pd.DataFrame, name: str) -> go.Figure:
    """The grade shares of the set beside the development test's, grouped bars."""
    fig = go.Figure()
    for data, rows in shares.groupby("data", sort=False):
        fig.add_trace(go.Bar(x=rows["grade"], y=rows["share"], name=str(data),
                             text=[f"{s:.0%}" for s in rows["share"]]))  # fmt: skip
    fig.update_layout(template="plotly_white", height=340, width=560, barmode="group",
                      title=f"Grades of {name} and of the development test",
                      xaxis={"title": "true grade (ICDR)"},
                      yaxis={"title": "share of images", "tickformat": ".0%"})  # fmt: skip
    return fig


def confusion_figure(confusion: list[list[int]], title: str) -> go.Figure:
    """Counts, true grade by row and predicted by column."""
    fig = go.Figure(go.Heatmap(z=confusion, x=GRADES, y=GRADES, colorscale="Blues",
                               text=confusion, texttemplate="%{text}", showscale=False))  # fmt: skip
    fig.update_layout(template="plotly_white", height=360, width=420, title=title,
                      xaxis={"title": "predicted grade"},
                      yaxis={"title": "true grade", "autorange": "reversed"})  # fmt: skip
    return fig


def set_part(name: str, block: dict, figure_html: Callable[[go.Figure], str]) -> str:
    out = [f"<h3>{html.escape(name)}</h3>"]
    out.append(f"<p>{block['images']} images of {block['patients']} patients.</p>")
    if block["note"]:
        out.append(f"<p class='warn'>{html.escape(block['note'])}</p>")
    runs = runs_frame(block)
    if not runs.empty:
        out.append(html_table(runs, sortable=False))
        out.append(bootstrap_note(block["bootstrap"]))
    best = block["best"]
    if best is not None:
        ref = best["referable"]
        out.append(
            f"<p class='note'>Sensitivity and specificity per image at the threshold "
            f"{_num(ref['threshold'], 4)} chosen on the development val; per patient: "
            f"{_pct(ref['test_patient']['sensitivity'])} / "
            f"{_pct(ref['test_patient']['specificity'])}.</p>"
        )
        out.append(figure_html(confusion_figure(best["confusion"], f"Best trial on {name}")))
    shares = shares_frame(block)
    if not shares.empty:
        out.append(figure_html(shares_figure(shares, name)))
    return "".join(out)


def external_section(summary: dict, figure_html: Callable[[go.Figure], str]) -> str:
    sets = summary.get("external") or {}
    if not sets:
        return (
            "<p class='note'>This study has no external test set: add "
            "<code>external: [{name: messidor2, path: /data/messidor2}]</code> to its YAML "
            "(or <code>--external NAME=PATH</code>) to test the winner on data from "
            "elsewhere.</p>"
        )
    return HOW_TO_READ + "".join(set_part(n, b, figure_html) for n, b in sets.items())
