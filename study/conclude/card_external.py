"""The model card's answer to CLAIM 2024 item 33, "external testing", from summary.json's
`external` key (study.analyze.external) when it holds the exported trial. Pure: dicts in, a
sentence out.

    external_testing(summary, trial_id)   # None: no external set tested it (left to the authors)
"""

from __future__ import annotations

from typing import Any

from study.conclude.card_screening import _ci, _pct


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else "–"


def set_sentence(name: str, block: dict, run: dict) -> str:
    ref, image = run["referable"], run["referable"]["test_image"]
    return (
        f"{name} ({block['images']} images, {block['patients']} patients): kappa "
        f"{_num(run['kappa'])}{_ci(run['kappa_ci'], _num)}, accuracy {_pct(run['acc'])}"
        f"{_ci(run['acc_ci'])}, referable AUROC {_num(ref['auroc'])}{_ci(ref['auroc_ci'], _num)}, "
        f"sensitivity {_pct(image['sensitivity'])}{_ci(image['sensitivity_ci'])} and "
        f"specificity {_pct(image['specificity'])}{_ci(image['specificity_ci'])} at the "
        "threshold chosen on val"
    )


def external_testing(summary: dict | None, trial_id: str) -> str | None:
    """One sentence per external set that tested `trial_id`, or None."""
    parts = []
    for name, block in ((summary or {}).get("external") or {}).items():
        run = block.get("best")
        if run and str(run.get("trial_id")) == str(trial_id):
            parts.append(set_sentence(name, block, run))
    if not parts:
        return None
    return (
        "Tested once on external data, with nothing fitted on it (patient-bootstrap 95% "
        "intervals): " + "; ".join(parts) + "."
    )
