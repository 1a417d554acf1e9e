"""The report's "Both eyes" part of the referable section, from summary.json's `patients` key
(study.analyze.patient_view): the held-out test per patient beside per image, with the counts
of patients that have both eyes and one eye. Pure: dict in, HTML out."""

from __future__ import annotations

import html

import pandas as pd

from study.analyze.markup import html_table
from study.analyze.section_clinical import bootstrap_note

HOW_TO_READ = """<p class='note'><b>How to read this.</b> A patient is graded by the worse
eye: the higher of the two eyes' predicted grades against the higher of their true grades,
referable when that is &ge; 2 (either eye) — the rule <code>retina.predict --by-patient</code>
applies. Sensitivity and specificity count every patient with a test image; the kappa only the
patients with both eyes (for one eye, the maximum of two eyes is that eye). The per-image row
is of the same images, so the two read side by side. Unlike the operating-point table above,
these are of the predicted grades, not of a threshold on the referable score.</p>"""


def _pct(value) -> str:
    return "—" if value is None or value != value else f"{100 * value:.1f}%"


def _num(value) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def _ci(pair, fmt) -> str:
    lo, hi = pair if pair else (None, None)
    return "" if lo is None or hi is None else f" [{fmt(lo)}, {fmt(hi)}]"


def levels_table(run: dict) -> pd.DataFrame:
    """Per image and per patient: n, referable, sensitivity, specificity, kappa (intervals
    where the run has them)."""
    pat, img = run["per_patient"], run["per_image"]
    rows = []
    for label, b, kappa, n_kappa in (
        ("test, per image", img, "kappa", img["n"]),
        ("test, per patient", pat, "kappa_both_eyes", run["both_eyes"]),
    ):
        rows.append({"": label, "n": str(b["n"]), "referable": str(b["referable"]),
                     "sensitivity": _pct(b["sensitivity"]) + _ci(b["sensitivity_ci"], _pct),
                     "specificity": _pct(b["specificity"]) + _ci(b["specificity_ci"], _pct),
                     "quadratic kappa (n)": f"{_num(b[kappa])}{_ci(b[f'{kappa}_ci'], _num)} "
                     f"({n_kappa})"})  # fmt: skip
    return pd.DataFrame(rows)


def runs_table(confirm: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "run": r["trial_id"], "patients (both / one eye)": f"{r['patients']} "
        f"({r['both_eyes']} / {r['one_eye']})",
        "sens / spec (patients)": f"{_pct(r['per_patient']['sensitivity'])} / "
        f"{_pct(r['per_patient']['specificity'])}",
        "kappa: images → patients (both eyes)": f"{_num(r['per_image']['kappa'])} → "
        f"{_num(r['per_patient']['kappa_both_eyes'])}",
    } for r in confirm])  # fmt: skip


def patients_section(summary: dict) -> str:
    patients = summary.get("patients")
    out = ["<h3>Both eyes: per patient</h3>"]
    if not patients:
        return "".join(out) + "<p class='note'>This summary has no patient-level view.</p>"
    out.append(HOW_TO_READ)
    if patients["note"]:
        out.append(f"<p class='warn'>{html.escape(patients['note'])}</p>")
    best = patients["best"]
    if best is not None:
        out.append(
            f"<p>Best trial {html.escape(best['trial_id'])}: {best['patients']} test patients, "
            f"{best['both_eyes']} with both eyes, {best['one_eye']} with one eye only"
            f" ({best['images']} test images).</p>"
        )
        out.append(html_table(levels_table(best), sortable=False))
        out.append(bootstrap_note(patients["bootstrap"]))
    if patients["confirm"]:
        out.append("<p>Confirm runs (the spread over seeds is their interval):</p>")
        out.append(html_table(runs_table(patients["confirm"]), sortable=False))
    return "".join(out)
