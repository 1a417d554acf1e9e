"""The report's screening section, from summary.json's `referable` and `calibration` keys:
AUROC of referable DR, the operating point chosen on val and its test sensitivity/specificity
per image and per patient, ECE before and after calibration (the top grade's, and P(referable)'s
for either head), and reliability diagrams.
Pure: dict in, HTML and figures out.

    html = clinical_section(build_summary(study, predictions), figure_to_html)
"""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go

from study.analyze.figure_reliability import (
    REFERABLE_AXES,
    TOP_LABEL_AXES,
    reliability_figure,
    reliability_frame,
)
from study.analyze.markup import html_table

HOW_TO_READ = """<p class='note'><b>How to read this.</b> A screening programme asks one
question: refer (ICDR grade &ge; 2) or not. The referable score ranks images; AUROC is the
chance that a referable image scores above a non-referable one. The threshold is chosen on the
validation split to meet the stated target, then read once on test: test never moves it. A
patient is referable when either eye is, and is flagged when either eye is. Intervals resample
test patients (both eyes together). For scale: Gulshan et al. (JAMA 2016) reported sensitivity
97.5% / specificity 93.4% at a high-sensitivity point chosen in development; the IDx-DR pivotal
trial (Abr&agrave;moff 2018) 87.2% / 90.7% — on other data, with other graders.</p>"""


def _pct(value) -> str:
    return "—" if value is None or value != value else f"{100 * value:.1f}%"


def _ci(pair) -> str:
    lo, hi = pair if pair else (None, None)
    return "" if lo is None or hi is None else f" [{_pct(lo)}, {_pct(hi)}]"


def _num(value, digits: int = 3) -> str:
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def _num_ci(pair) -> str:
    lo, hi = pair if pair else (None, None)
    return "" if lo is None or hi is None else f" [{_num(lo)}, {_num(hi)}]"


def operating_table(best: dict) -> pd.DataFrame:
    rows = [{"": "val (chose the threshold)", "images / patients": str(best["val"]["n"]),
             "referable": str(best["val"]["referable"]),
             "sensitivity": _pct(best["val"]["sensitivity"]),
             "specificity": _pct(best["val"]["specificity"])}]  # fmt: skip
    for key, label in (("test_image", "test, per image"), ("test_patient", "test, per patient")):
        b = best[key]
        rows.append({"": label, "images / patients": str(b["n"]), "referable": str(b["referable"]),
                     "sensitivity": _pct(b["sensitivity"]) + _ci(b["sensitivity_ci"]),
                     "specificity": _pct(b["specificity"]) + _ci(b["specificity_ci"])})  # fmt: skip
    return pd.DataFrame(rows)


def runs_table(referable: dict, calibration: dict) -> pd.DataFrame:
    """One row per run (best, then confirm): AUROC, threshold, test sens/spec, T, the top
    grade's ECE, and P(referable)'s ECE (before -> after calibration, intervals for the best)."""
    cal = {c["trial_id"]: c for c in [calibration.get("best"), *calibration["confirm"]] if c}
    rows = []
    for role, run in [("best", referable["best"])] + [("confirm", r) for r in referable["confirm"]]:
        if run is None:
            continue
        c = cal.get(run["trial_id"], {})
        ref = c.get("referable") or {}
        rows.append({
            "run": f"{run['trial_id']} ({role})", "AUROC": _num(run["auroc"]),
            "threshold": _num(run["threshold"]),
            "sens / spec (images)": f"{_pct(run['test_image']['sensitivity'])} / "
            f"{_pct(run['test_image']['specificity'])}",
            "T (val)": "Platt" if c.get("head") == "regress" else _num(c.get("temperature"), 2),
            "ECE top grade": f"{_num(c.get('test_ece'))} → {_num(c.get('test_ece_scaled'))}",
            "ECE P(referable)": f"{_num(ref.get('test_ece'))}{_num_ci(ref.get('test_ece_ci'))}"
            f" → {_num(ref.get('test_ece_scaled'))}{_num_ci(ref.get('test_ece_scaled_ci'))}",
        })  # fmt: skip
    return pd.DataFrame(rows)


def clinical_section(summary: dict, figure_html: Callable[[go.Figure], str]) -> str:
    referable, calibration = summary.get("referable"), summary.get("calibration")
    if not referable:
        return "<p class='note'>This summary has no referable-DR analysis.</p>"
    out = [HOW_TO_READ]
    point, best = referable["operating_point"], referable["best"]
    if referable["note"]:
        out.append(f"<p class='warn'>{html.escape(referable['note'])}</p>")
    if best is None:
        return "".join(out)
    out.append(
        f"<p>Best trial {html.escape(best['trial_id'])}: AUROC <b>{_num(best['auroc'])}</b>"
        f"{html.escape(' [' + _num(best['auroc_ci'][0]) + ', ' + _num(best['auroc_ci'][1]) + ']')}"
        f" on test. Operating point: {point['target']} &ge; {point['value']:g} on val, threshold "
        f"{_num(best['threshold'], 4)} on the referable score "
        f"({html.escape(referable['score'])}).</p>"
    )
    out.append(html_table(operating_table(best), sortable=False))
    out.append(bootstrap_note(referable["bootstrap"]))
    out.append("<h3>Calibration</h3>")
    out.append(
        f"<p class='note'>Expected calibration error on test, {calibration['bins']} equal-mass "
        "bins: of the top grade's probability (a classify head; temperature T fitted on val by "
        "negative log-likelihood, on log-probabilities: the same as on logits for softmax; "
        "T &gt; 1: the model was over-confident), and of P(referable) for either head: a "
        "classify head's p2+p3+p4, temperature-scaled; a regress head's score through a "
        "logistic fitted on val (Platt). Intervals of the best trial's P(referable) ECE "
        "resample test patients within the whole test split's bins.</p>"
    )
    if calibration["note"]:
        out.append(f"<p class='warn'>{html.escape(calibration['note'])}</p>")
    out.append(html_table(runs_table(referable, calibration), sortable=False))
    for runs, title in (([calibration["best"]], "best trial"),
                        (calibration["confirm"], "confirm runs")):  # fmt: skip
        for block, axes in (("referable", REFERABLE_AXES), (None, TOP_LABEL_AXES)):
            frame = reliability_frame(runs, block)  # top label: classify heads only
            if len(frame):
                out.append(figure_html(reliability_figure(frame, axes, calibration["bins"],
                                                          title)))  # fmt: skip
    return "".join(out)


def bootstrap_note(boot: dict) -> str:
    """The line under a table of patient-bootstrap intervals: how they were drawn."""
    return (f"<p class='note'>{boot['resamples']} patient resamples (seed {boot['seed']}), "
            f"{boot['confidence']:.0%} percentile intervals.</p>")  # fmt: skip
