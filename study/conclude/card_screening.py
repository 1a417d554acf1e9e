"""The model card's section on referable DR and calibration, from summary.json's `referable`
and `calibration` keys (study.analyze.clinical) when they describe the exported trial: the
threshold and temperature that `retina.predict` applies, and their test performance; and its
"Both eyes" section from the `patients` key (study.analyze.patient_view). Pure: dicts in,
Markdown lines out."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retina.metrics import REFERABLE_GRADE
from study.record.layout import SUMMARY_FILE


def _pct(v: Any) -> str:
    return "–" if not isinstance(v, int | float) or not math.isfinite(v) else f"{100 * v:.1f}%"


def _ci(pair: Any, show: Callable[[Any], str] = _pct) -> str:
    """` [low, high]` in `show`'s format, or nothing when the interval is missing."""
    if not pair or any(not isinstance(v, int | float) for v in pair):
        return ""
    return f" [{show(pair[0])}, {show(pair[1])}]"


def trial_blocks(summary: dict | None, trial_id: str) -> tuple[dict | None, dict | None]:
    """(referable, calibration) of summary.json's best trial when it is `trial_id`, else None."""

    def of(key: str) -> dict | None:
        block = ((summary or {}).get(key) or {}).get("best")
        return block if block and str(block.get("trial_id")) == str(trial_id) else None

    return of("referable"), of("calibration")


def screening_record(folder: Path, trial_id: str) -> dict[str, Any]:
    """model.pt's `temperature`, `referable_platt` (a regress head's [slope, intercept]) and
    `referable_threshold` (retina.screening) when the study's summary.json chose them for
    `trial_id`; none otherwise (predict: T = 1, no regress P(referable), grade >= 2)."""
    path = Path(folder) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):  # the card says the same: no operating point for this model
        summary = None
    ref, cal = trial_blocks(summary, trial_id)
    out = {}
    if cal is not None and _finite(cal.get("temperature")):
        out["temperature"] = float(cal["temperature"])
    platt = (cal or {}).get("platt") or {}
    if _fitted(platt):
        out["referable_platt"] = [float(platt["slope"]), float(platt["intercept"])]
    if ref is not None and _finite(ref.get("threshold")):
        out["referable_threshold"] = float(ref["threshold"])
    return out


def _fitted(platt: dict) -> bool:
    return _finite(platt.get("slope")) and _finite(platt.get("intercept"))


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def screening_lines(summary: dict | None, trial_id: str) -> list[str]:
    ref, cal = trial_blocks(summary, trial_id)
    lines = ["## Referable DR and calibration"]
    if ref is None:
        return lines + [
            f"No operating point was chosen for this trial (summary.json has none for it): "
            f"`retina.predict` calls referable the images whose predicted grade is >= "
            f"{REFERABLE_GRADE}, with the probabilities as trained.",
            "",
        ]
    point = summary["referable"]["operating_point"]
    lo, hi = ref["auroc_ci"]
    lines += [
        f"- Referable score: {summary['referable']['score']}. AUROC on test "
        f"{ref['auroc']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "") + ".",
        f"- Operating point: {point['target']} >= {point['value']:g} on val -> threshold "
        f"**{ref['threshold']:.4g}** (val: sensitivity {_pct(ref['val']['sensitivity'])}, "
        f"specificity {_pct(ref['val']['specificity'])}). Test never moved it.",
    ]
    for key, label in (("test_image", "per image"), ("test_patient", "per patient (either eye)")):
        b = ref[key]
        lines.append(
            f"- Test, {label}: sensitivity {_pct(b['sensitivity'])}{_ci(b['sensitivity_ci'])}, "
            f"specificity {_pct(b['specificity'])}{_ci(b['specificity_ci'])} "
            f"({b['referable']} referable of {b['n']})."
        )
    lines += calibration_lines(summary, cal)
    lines += [
        "",
        "`retina.predict` outputs the calibrated probabilities (`p_referable`) and `referable` "
        "at this threshold. 95% intervals resample test patients.",
        "",
    ]
    return lines


def calibration_lines(summary: dict, cal: dict | None) -> list[str]:
    """The calibration this model carries: a classify head's temperature (top grade's ECE), a
    regress head's Platt fit, and for both the test ECE of P(referable) before and after."""
    if cal is None:
        return []
    bins = summary["calibration"]["bins"]
    lines = []
    if cal.get("head", "classify") == "classify":
        lines.append(
            f"- Calibration: temperature T = **{cal['temperature']:.3f}** fitted on val; test "
            f"expected calibration error of the top grade ({bins} equal-mass bins) "
            f"{cal['test_ece']:.3f} as trained, {cal['test_ece_scaled']:.3f} after scaling."
        )
    elif not _fitted(cal["platt"]):
        lines.append("- Calibration: no Platt fit (val holds referable or non-referable images "
                     "only); `retina.predict` gives no P(referable) for this model.")  # fmt: skip
    else:
        platt = cal["platt"]
        lines.append(
            f"- Calibration: P(referable) = 1 / (1 + exp(-(**{platt['slope']:.4g}** x score + "
            f"**{platt['intercept']:.4g}**))), a logistic of the regress score fitted on val "
            "(Platt scaling); stored in model.pt (`referable_platt`) and the ONNX metadata."
        )
    ref = cal.get("referable")
    if ref:
        lines.append(
            f"- P(referable) on test, expected calibration error ({bins} equal-mass bins): "
            f"{_num(ref['test_ece'])}{_ci(ref.get('test_ece_ci'), _num)} as trained, "
            f"{_num(ref['test_ece_scaled'])}{_ci(ref.get('test_ece_scaled_ci'), _num)} "
            "calibrated."
        )
    return lines


def updating_method_text(cal: dict | None) -> str:
    """The checklist's model updating (TRIPOD+AI 12f): the calibration fitted on val."""
    if cal is None:
        return "No updating: the model's probabilities are used as trained."
    if cal.get("head") == "regress" and not _fitted(cal["platt"]):
        return "No updating: val held one class only, so no Platt fit was possible."
    if cal.get("head") == "regress":
        platt = cal["platt"]
        return (f"Platt scaling of the regress score fitted on val (logistic, slope "
                f"{platt['slope']:.4g}, intercept {platt['intercept']:.4g}) gives P(referable); "
                "stored with the model.")  # fmt: skip
    return (f"Temperature scaling fitted on val (negative log-likelihood): T = "
            f"{cal['temperature']:.3f}; stored with the model.")  # fmt: skip


def updating_result_text(cal: dict | None) -> str:
    """Its result on test (TRIPOD+AI 24): ECE before and after."""
    if cal is None:
        return "No updating was done."
    ref = cal.get("referable")
    referable = (f" P(referable): {_num(ref['test_ece'])} as trained, "
                 f"{_num(ref['test_ece_scaled'])} calibrated." if ref else "")  # fmt: skip
    if cal.get("head") == "regress":
        return "Test expected calibration error of" + referable.rstrip(".") + " (Platt scaling)."
    return (f"Test expected calibration error {cal['test_ece']:.3f} as trained, "
            f"{cal['test_ece_scaled']:.3f} after temperature scaling.{referable}")  # fmt: skip


def _num(v: Any) -> str:
    return "–" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v:.3f}"


def patient_lines(summary: dict | None, trial_id: str) -> list[str]:
    """The held-out test per patient (summary.json `patients.best`, when it is `trial_id`)."""
    patients = (summary or {}).get("patients") or {}
    best = patients.get("best")
    lines = ["## Both eyes: per patient"]
    if not best or str(best.get("trial_id")) != str(trial_id):
        why = patients.get("note") or "summary.json has no patient-level view of this trial"
        return lines + [f"No patient-level view: {why}", ""]
    pat, img = best["per_patient"], best["per_image"]
    lines += [
        f"A patient's grade is the higher of its eyes' predicted grades; referable when it is "
        f">= {REFERABLE_GRADE} (either eye); `retina.predict --by-patient` applies the same rule.",
        f"- Test patients: **{best['patients']}** ({best['both_eyes']} with both eyes, "
        f"{best['one_eye']} with one eye only: those count for referable, not for the kappa).",
        f"- Referable per patient: sensitivity {_pct(pat['sensitivity'])}"
        f"{_ci(pat['sensitivity_ci'])}, specificity {_pct(pat['specificity'])}"
        f"{_ci(pat['specificity_ci'])} ({pat['referable']} referable of {pat['n']}); per image "
        f"on the same images {_pct(img['sensitivity'])} / {_pct(img['specificity'])}.",
        f"- Quadratic kappa per patient (max of the two eyes' grades, the {best['both_eyes']} "
        f"with both eyes): {_num(pat['kappa_both_eyes'])}{_ci(pat['kappa_both_eyes_ci'], _num)}; "
        f"per image {_num(img['kappa'])}{_ci(img['kappa_ci'], _num)} ({img['n']} images).",
        "",
        "These are of the predicted grades (not the threshold above); 95% intervals resample "
        "test patients.",
        "",
    ]
    if patients.get("note"):
        lines[-1:-1] = [f"Note: {patients['note']}", ""]
    return lines
