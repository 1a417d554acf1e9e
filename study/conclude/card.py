"""The model card (`best/card.md`) of an exported model: pure, dicts in, Markdown out.

Written by `study.conclude.export` (e.g. `python -m study.export results/<study>`) from the
study's `study.json`, the trial's row of `trials.parquet`, the selection and, once the confirm
stage exists, `summary.json`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from retina.metrics import NUM_CLASSES, REFERABLE_GRADE, EpochMetrics
from retina.tta import view_names
from study.conclude.card_inputs import CardInputs
from study.conclude.card_screening import patient_lines, screening_lines
from study.conclude.checklist import answer_items, count_line, render_checklist

SPLITS = ("train", "val", "test")
# (column suffix in trials.parquet, label): the card's metrics table, in order.
METRICS = (
    ("acc", "accuracy"),
    ("kappa", "quadratic weighted kappa"),
    ("balanced_acc", "balanced accuracy"),
    ("referable_sensitivity", f"referable (grade >= {REFERABLE_GRADE}) sensitivity"),
    ("referable_specificity", f"referable (grade >= {REFERABLE_GRADE}) specificity"),
    ("loss", "loss (cross-entropy; SmoothL1 for a regress head)"),
)


def majority_baseline(class_counts: dict[str, list[int]]) -> tuple[int, dict[str, EpochMetrics]]:
    """The most common training grade, and the metrics of predicting it for every image."""
    majority = int(np.argmax(class_counts["train"]))
    out = {}
    for split in ("val", "test"):
        conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        conf[:, majority] = class_counts[split]  # every image predicted as `majority`
        out[split] = EpochMetrics.from_confusion(conf, float("nan"), 0.0)
    return majority, out


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _baseline_value(m: EpochMetrics, key: str) -> float:
    names = {"acc": "accuracy", "balanced_acc": "balanced_accuracy"}
    return float("nan") if key == "loss" else float(getattr(m, names.get(key, key)))


def render_card(c: CardInputs) -> str:
    data, trial, config = c.study.get("data", {}), c.trial, c.config
    counts = data.get("class_counts", {})
    size = config.get("image_size", data.get("image_size"))  # the trial's, if searched
    init = "ImageNet-pretrained" if config.get("pretrained") else "trained from scratch"
    answers = answer_items(c)  # the reporting checklist: counted at the top, listed at the end
    lines = [
        f"# Model card: {c.study.get('name')}, trial {trial['trial_id']}",
        "",
        "**A research model, not a medical device.** It comes out of a hyperparameter study on "
        "one dataset; it has not been validated clinically and must not be used to diagnose, "
        "screen or treat anyone.",
        "",
        count_line(answers),
        "",
        "## Model",
        f"- {config.get('arch')} (torchvision ResNet), {init}, {_head_words(c.thresholds)} for "
        f"the ICDR grades 0-4: " + ", ".join(f"{g} {n}" for g, n in enumerate(c.grade_names)) + ".",
        f"- Input: the photograph decoded, cropped to the fundus disc, padded to a square and "
        f"resized to {size} x {size} px (retina.images.decode_fundus, the study's cache), "
        f"preprocessing `{data.get('preprocessing')}`, then normalised with ImageNet's mean and "
        "std. `python -m retina.predict` does all of this.",
        *_output_lines(c.thresholds),
        _tta_line(c.tta, c.thresholds),
        "- `model.pt`: weights and everything needed to use them; "
        "`torch.load(path, weights_only=True)`.",
        f"- `model.onnx`: opset {c.opset}, input `images` float32 [N, 3, {size}, {size}] "
        f"(normalised), output {_onnx_output(c.thresholds, c.tta)}, any N. Largest difference to "
        f"PyTorch on {c.onnx_images} real cached images: {c.onnx_max_diff:.2e} (allowed: 1e-4 "
        "+ 1e-5 x the largest |output|; the predicted grades agree).",
        "",
        "## Data",
        f"- Folder `{data.get('path')}`, {data.get('layout')} layout, dataset hash "
        f"`{data.get('dataset_hash')}`; {data.get('skipped', 0)} unreadable images skipped.",
        f"- Split by patient (both eyes on one side) with split seed {data.get('split_seed')}.",
        "",
        *_table(
            ["split", *[f"grade {g}" for g in range(NUM_CLASSES)], "images"],
            [[s, *counts.get(s, [None] * NUM_CLASSES), sum(counts.get(s, []))] for s in SPLITS],
        ),
        "",
        "## Configuration",
        *_table(["hyperparameter", "value"], [[k, v] for k, v in config.items()]),
        "",
        f"Best epoch {trial.get('best_epoch')} of {trial.get('epochs_run')} run; the weights are "
        "that epoch's checkpoint.",
        "",
        "## Results",
    ]
    majority, baseline = majority_baseline(counts)
    lines += _table(
        ["metric", "val (best epoch)", "test", "majority baseline val", "majority baseline test"],
        [
            [label, trial.get(f"best_val_{key}"), trial.get(f"test_{key}"),
             _baseline_value(baseline["val"], key), _baseline_value(baseline["test"], key)]
            for key, label in METRICS
        ],
    )  # fmt: skip
    lines += [
        "",
        f"Majority baseline: grade {majority} (the most common in train) for every image. "
        "Val picked this model, so its val numbers are optimistic; test was read once."
        + ("" if _finite(trial.get("test_kappa")) else " This trial was not tested.")
        + _one_view_words(c.tta, trial.get("test_kappa_1view")),
        "",
        "## Confirm stage",
        *_summary(c.summary),
        "",
        *screening_lines(c.summary, str(trial["trial_id"])),
        *patient_lines(c.summary, str(trial["trial_id"])),
        "## How it was selected",
        c.selection,
        "",
        "## Versions",
        *_table(
            ["package", "study", "export"],
            [
                [k, c.study.get("versions", {}).get(k), c.versions.get(k)]
                for k in dict.fromkeys([*c.study.get("versions", {}), *c.versions])
            ],
        ),  # fmt: skip
        "",
        f"Harness revision `{c.study.get('git_rev')}`; study created {c.study.get('created')}; "
        f"exported {c.date}.",
        "",
        *render_checklist(answers),
        "",
    ]
    return "\n".join(lines)


# model.pt carries the study's referable threshold only when the summary's best trial is the one
# exported (study.conclude.card_screening); the section "Referable DR" below says which.
REFERABLE_WORDS = (
    "Referable (retina.predict): at the threshold the study chose on val for its operating "
    f"point when model.pt stores one (see Referable DR below), else grade >= {REFERABLE_GRADE}."
)


def _head_words(thresholds: list[float] | None) -> str:
    if thresholds is None:
        return f"a {NUM_CLASSES}-way classification head (softmax, cross-entropy)"
    return "a regression head (one score trained towards the grade with SmoothL1)"


def _output_lines(thresholds: list[float] | None) -> list[str]:
    if thresholds is None:
        return [f"- Output: logits of grades 0-4. {REFERABLE_WORDS}"]
    cuts = ", ".join(f"{t:.4g}" for t in thresholds)
    return [
        f"- Output: a score; grade g when t[g-1] <= score < t[g], thresholds t = [{cuts}], "
        "fitted on the validation split at the best epoch to maximise quadratic weighted kappa "
        "(from 0.5/1.5/2.5/3.5; the search's val metrics used those fixed cuts, the test "
        f"metrics these). {REFERABLE_WORDS}",
    ]


def _onnx_output(thresholds: list[float] | None, views: int = 1) -> str:
    over = f" over {views} dihedral views (the graph includes them; metadata `tta`)"
    if thresholds is None:
        if views == 1:
            return f"`logits` [N, {NUM_CLASSES}]"
        return (f"`logits` [N, {NUM_CLASSES}], the log of the mean softmax{over}: softmax and "
                "arg max read it as logits")  # fmt: skip
    score = "`score` [N, 1]" + (f", the mean score{over}" if views > 1 else "")
    return score + " (the thresholds are in its metadata, key `thresholds`, JSON)"


def _tta_line(views: int, thresholds: list[float] | None) -> str:
    if views == 1:
        return ("- Test-time augmentation: none; the study tested each image as is (`tta: 1`), "
                "as `python -m retina.predict` grades it by default.")  # fmt: skip
    averaged = "softmax probabilities" if thresholds is None else "scores"
    return (
        f"- Test-time augmentation: every test of the study averaged the {averaged} of {views} "
        f"dihedral views of each image ({', '.join(view_names(views))}; `tta: {views}`), and "
        f"so does `python -m retina.predict` by default ({views} times the compute; `--tta 1` "
        "grades the image as is). The search's val metrics are of one view."
    )


def _one_view_words(views: int, kappa_1view: Any) -> str:
    if views == 1 or not _finite(kappa_1view):
        return ""
    return (f" Test is over {views} views; the image as is (one view) has test quadratic "
            f"weighted kappa {kappa_1view:.4g}.")  # fmt: skip


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _summary(summary: dict[str, Any] | None) -> list[str]:
    """The confirm stage's conclusions, as the report states them (summary.json's sentences)."""
    confirm = (summary or {}).get("confirm") or {}
    if summary is None or confirm.get("status") not in ("ok", "one_cell"):
        note = confirm.get("note") or "no summary.json"
        return [
            f"No comparison over seeds ({note}): every number above comes from one training "
            "run, and runs of one configuration with other seeds can differ by more than the "
            "gaps between trials."
        ]
    lines = [
        "Each cell's best configuration retrained with new seeds, each run tested once "
        "(mean ± sd over the runs; 95% interval resampling test patients and seeds):",
        "",
    ]
    for cell in summary.get("cells", []):
        parts = []
        for name, m in cell.get("metrics", {}).items():
            if not _finite(m.get("mean")):
                continue
            spread = f" ± {m['sd']:.3f}" if _finite(m.get("sd")) else ""
            interval = (
                f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
                if _finite(m.get("ci_low")) and _finite(m.get("ci_high"))
                else ""
            )
            parts.append(f"{name} {m['mean']:.3f}{spread}{interval}")
        lines.append(f"- {cell.get('cell')} ({cell.get('n_runs')} runs): " + "; ".join(parts))
    sentences = [p["sentence"] for p in summary.get("pairs", []) if p.get("sentence")]
    if sentences:
        lines += ["", *(f"- {s}" for s in sentences)]
    optimism = (summary.get("optimism") or {}).get("sentence")
    if optimism:
        lines += ["", optimism]
    return lines
