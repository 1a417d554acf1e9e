"""summary.json's `patients` key: the held-out test seen per patient, both eyes together, for
the best search trial (with intervals) and each confirm run. Pure: predictions in, a
JSON-ready dict out (numpy/pandas; no torch, no Ray).

The rule is `retina.patients`' (the one `retina.predict --by-patient` applies): test images pair
by name (`<patient>_left` / `_right`); a patient's grade and label are its higher eye's;
referable when that is >= 2. Sensitivity and specificity count every paired patient; the kappa
only the patients with both eyes (max of the two eyes' grades). Beside it, the same figures per
image on the same images, so the two levels read side by side.

Intervals resample test patients (`resample.patient_weights`, both eyes together), one draw
serving both levels: an image weighs what its patient does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retina.metrics import NUM_CLASSES, REFERABLE_GRADE
from retina.patients import pair_eyes, patient_metrics, per_patient
from study.analyze.clinical import summary_runs
from study.analyze.load import StudyResults
from study.analyze.referable import CONFIDENCE, percentile_interval, sensitivity_specificity
from study.analyze.resample import CHUNK, kappa, patient_weights

RULE = (
    "test images pair by name (<patient>_left / <patient>_right); a patient's grade and label "
    f"are its higher eye's; referable: grade >= {REFERABLE_GRADE}. Sensitivity and specificity "
    "count every paired patient, the kappa only those with both eyes"
)
K = NUM_CLASSES


def _referable(true: np.ndarray, pred: np.ndarray, draws: list[np.ndarray]) -> dict:
    """Referable (grade >= 2) sensitivity and specificity of these (true, predicted) pairs,
    with intervals over `draws` (each (B, n): the rows' weights in a resample; none: null)."""
    positive = true >= REFERABLE_GRADE
    sens, spec = sensitivity_specificity(pred, positive, REFERABLE_GRADE)
    boot = [sensitivity_specificity(pred, positive, REFERABLE_GRADE, w) for w in draws]
    return {
        "n": len(true), "referable": int(positive.sum()),
        "sensitivity": sens, "sensitivity_ci": _ci([b[0] for b in boot]),
        "specificity": spec, "specificity_ci": _ci([b[1] for b in boot]),
    }  # fmt: skip


def _kappa(true: np.ndarray, pred: np.ndarray, draws: list[np.ndarray]) -> tuple[float, list]:
    """Quadratic kappa of these pairs (NaN for none) and its interval over `draws`: each
    resample's confusion matrix is `weights @ one-hot cells`."""
    if not len(true):
        return float("nan"), [None, None]
    cells = np.zeros((len(true), K * K), dtype=np.float32)
    cells[np.arange(len(true)), true * K + pred] = 1.0
    value = float(kappa(cells.sum(axis=0).reshape(K, K)))
    return value, _ci([kappa((w @ cells).reshape(-1, K, K)) for w in draws])


def _ci(parts: list[np.ndarray]) -> list[float | None]:
    return percentile_interval(np.concatenate(parts) if parts else np.array([]))


def patient_view(test: pd.DataFrame, n_resamples: int, rng: np.random.Generator) -> dict:
    """One run's test rows (image, true, predicted) seen per patient and per image; n_resamples
    0: no intervals (null)."""
    pairing = pair_eyes(test["image"].astype(str).tolist())
    paired = pairing.patient != None  # noqa: E711 - elementwise over an object array
    table = per_patient(pairing.patient, test["predicted"].to_numpy(), test["true"].to_numpy())
    view = patient_metrics(table)
    both = (table["eyes"] >= 2).to_numpy()
    p_true, p_pred = table["label"].to_numpy(np.int64), table["grade"].to_numpy(np.int64)
    p_index = pd.Index(table.index).get_indexer(pairing.patient[paired])
    draws = [patient_weights(len(table), min(CHUNK, n_resamples - s), rng)
             for s in range(0, n_resamples, CHUNK)] if len(table) else []  # fmt: skip
    i_true = test["true"].to_numpy(np.int64)[paired]
    i_pred = test["predicted"].to_numpy(np.int64)[paired]
    i_draws = [w[:, p_index] for w in draws]  # an eye weighs what its patient does
    p_kappa, p_kappa_ci = _kappa(p_true[both], p_pred[both], [w[:, both] for w in draws])
    i_kappa, i_kappa_ci = _kappa(i_true, i_pred, i_draws)
    return {
        "images": len(test),
        "left_out_images": len(pairing.unpaired),
        "patients": view.n_patients,
        "both_eyes": view.n_both,
        "one_eye": view.n_one,
        "per_patient": {
            **_referable(p_true, p_pred, draws),
            "kappa_both_eyes": p_kappa,
            "kappa_both_eyes_ci": p_kappa_ci,
        },
        "per_image": {
            **_referable(i_true, i_pred, i_draws),
            "kappa": i_kappa,
            "kappa_ci": i_kappa_ci,
        },
    }


def patients_summary(
    study: StudyResults, predictions: pd.DataFrame, n_resamples: int, seed: int
) -> dict:
    """{"rule", "bootstrap", "best", "confirm", "note"} (docs/results.md, `patients`)."""
    rng = np.random.default_rng(seed)  # its own stream: the other keys' numbers stay as they were
    out = {
        "rule": RULE,
        "bootstrap": {"unit": "patient", "resamples": n_resamples, "seed": seed,
                      "confidence": CONFIDENCE, "runs": "best"},  # fmt: skip
        "best": None, "confirm": [], "note": "",
    }  # fmt: skip
    notes = []
    for trial_id, role in summary_runs(study):
        rows = predictions[predictions["trial_id"] == trial_id]
        test = rows[rows["split"] == "test"]
        if test.empty:
            continue
        view = patient_view(test, n_resamples if role == "best" else 0, rng)
        if not view["patients"]:
            notes.append(f"{trial_id}: no test image name pairs eyes (<patient>_left/_right)")
            continue
        if role == "best":
            out["best"] = {"trial_id": trial_id, **view}
        else:
            out["confirm"].append({"trial_id": trial_id, **view})
    best = out["best"]
    if best is not None and best["left_out_images"]:
        notes.append(f"{best['left_out_images']} of {best['images']} test images name no eye and "
                     "are left out of the patient view")  # fmt: skip
    if best is not None and best["one_eye"]:
        notes.append(f"{best['one_eye']} of {best['patients']} test patients have one eye only: "
                     "counted for referable, not in the both-eyes kappa")  # fmt: skip
    if best is None and not notes:
        notes.append("The best search trial has no test predictions in predictions/.")
    out["note"] = "; ".join(notes) + ("." if notes and not notes[-1].endswith(".") else "")
    return out
