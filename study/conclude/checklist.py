"""The model card's reporting-checklist section: each item of `checklist_items.ITEMS` answered
from the study's own records, or marked not applicable with why, or left to the study's authors
with what they must state. Never silently missing: every item gets one of the three. Pure:
the card's inputs in, Markdown lines out.

    answers = answer_items(card_inputs)
    counts(answers)            # {"answered": .., "not applicable": .., "to be stated by the authors": ..}
    render_checklist(answers)  # Markdown lines
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from retina.metrics import REFERABLE_GRADE
from study.conclude.card_external import external_testing
from study.conclude.card_inputs import CardInputs
from study.conclude.card_screening import trial_blocks, updating_method_text, updating_result_text
from study.conclude.checklist_items import CLAIM, CLAIM_ITEMS, ITEMS, TRIPOD, Item

ANSWERED, NOT_APPLICABLE, AUTHORS = "answered", "not applicable", "to be stated by the authors"
STATUSES = (ANSWERED, NOT_APPLICABLE, AUTHORS)


@dataclass(frozen=True)
class Answer:
    item: Item
    status: str  # one of STATUSES
    text: str


def _counts(c: CardInputs) -> dict[str, list[int]]:
    return c.study.get("data", {}).get("class_counts", {})


def _images(c: CardInputs, split: str) -> int:
    return int(sum(_counts(c).get(split, [])))


def _referable(c: CardInputs, split: str) -> int:
    return int(sum(_counts(c).get(split, [])[REFERABLE_GRADE:]))


def _config(c: CardInputs) -> dict[str, Any]:
    return c.study.get("config") or {}


def _pct(v: Any) -> str:
    return "–" if not isinstance(v, int | float) or not math.isfinite(v) else f"{100 * v:.1f}%"


def _best(c: CardInputs, key: str) -> dict | None:
    """summary.json's referable/calibration block of this trial, when it is this trial's."""
    referable, calibration = trial_blocks(c.summary, str(c.trial.get("trial_id")))
    return referable if key == "referable" else calibration


def title(c: CardInputs) -> str:
    return (
        f"Model card of study {c.study.get('name')}, trial {c.trial.get('trial_id')}: development "
        "and internal (patient-held-out) evaluation of a CNN that grades diabetic retinopathy "
        f"(ICDR 0-4) from one fundus photograph; referable = grade >= {REFERABLE_GRADE}."
    )


def abstract(c: CardInputs) -> str:
    return "The card's first lines and its Results table summarise the model; a paper's abstract is the authors'."


def objectives(c: CardInputs) -> str:
    # study.json's hyperparameters: the space's and data.image_size (a dimension too)
    names = c.study.get("hyperparameters") or list(_config(c).get("space") or {})
    space = ", ".join(str(k) for k in names)
    return (f"Develop a grader by hyperparameter search (dimensions: {space or '–'}) and evaluate "
            "it once on a held-out test split of the same dataset (internal validation).")  # fmt: skip


def data_source(c: CardInputs) -> str:
    d = c.study.get("data", {})
    return (f"One dataset for development and evaluation: folder `{d.get('path')}` "
            f"({d.get('layout')} layout), content hash `{d.get('dataset_hash')}`. Its "
            "representativeness is the authors' to state.")  # fmt: skip


def preparation(c: CardInputs) -> str:
    d = c.study.get("data", {})
    size = c.config.get("image_size", d.get("image_size"))  # the model's (the size is searchable)
    return (f"Each photograph decoded, cropped to the fundus disc, padded square, resized to "
            f"{size} px, preprocessing `{d.get('preprocessing')}`; "
            f"{d.get('skipped', 0)} undecodable images skipped. No other quality check.")  # fmt: skip


def outcome(c: CardInputs) -> str:
    return ("The ICDR grade 0-4 of each photograph as given in the dataset's labels, assessed "
            f"at the time of the photograph (no time horizon); referable DR = grade >= "
            f"{REFERABLE_GRADE}, the threshold for referral to an ophthalmologist.")  # fmt: skip


def predictors(c: CardInputs) -> str:
    return "The pixels of one fundus photograph; no clinical or demographic variable."


def predictor_input(c: CardInputs) -> str:
    size = c.config.get("image_size", c.study.get("data", {}).get("image_size"))
    return (f"RGB pixels at {size} x {size}, scaled to 0..1 and normalised with ImageNet's mean "
            "and std; random flips in training only.")  # fmt: skip


def sample_size(c: CardInputs) -> str:
    boot = (c.summary or {}).get("bootstrap") or {}
    patients = f" ({boot['test_patients']} patients)" if boot.get("test_patients") else ""
    return (f"The whole dataset given was used: {_images(c, 'train')} train, "
            f"{_images(c, 'val')} val, {_images(c, 'test')} test images{patients}; no sample "
            "size calculation. The intervals below state the precision this size gives.")  # fmt: skip


def missing(c: CardInputs) -> str:
    skipped = c.study.get("data", {}).get("skipped", 0)
    return (f"Every image needs a grade in the label file (the manifest refuses rows without); "
            f"{skipped} images that could not be decoded were left out.")  # fmt: skip


def partitions(c: CardInputs) -> str:
    d = _config(c).get("data") or {}
    return (f"Split by patient (both eyes on one side), split seed {c.study.get('data', {}).get('split_seed')}, "
            f"val {d.get('val_fraction', '?')}, test {d.get('test_fraction', '?')}. Val chose the trial, its "
            "epoch, the temperature and the referable threshold; test was read once, to report.")  # fmt: skip


def model_building(c: CardInputs) -> str:
    cfg = _config(c)
    search, sched = cfg.get("search") or {}, cfg.get("scheduler") or {}
    return (f"{c.config.get('arch')} (torchvision ResNet), a 5-way head. {cfg.get('num_samples')} "
            f"trials by {search.get('algorithm')} search, scheduler {sched.get('name')}, chosen by "
            f"{(cfg.get('metric') or {}).get('name')} on val; internal validation on the "
            "patient-held-out test split.")  # fmt: skip


def measures(c: CardInputs) -> str:
    return ("Quadratic weighted kappa, accuracy, balanced accuracy; referable sensitivity and "
            "specificity per image and per patient, AUROC; expected calibration error and "
            "reliability diagrams; 95% intervals by patient bootstrap (and over training "
            "seeds when the confirm stage ran); each compared against the majority baseline.")  # fmt: skip


def updating_method(c: CardInputs) -> str:
    return updating_method_text(_best(c, "calibration"))


def how_to_predict(c: CardInputs) -> str:
    return ("`best/model.pt` (PyTorch, weights_only-loadable), `best/model.onnx`, and "
            "`python -m retina.predict --model best/ IMAGES`, which preprocesses as in training.")  # fmt: skip


def class_imbalance(c: CardInputs) -> str:
    if c.config.get("class_weighted"):
        return "Cross-entropy weighted by inverse grade frequency in train; then temperature scaling on val."
    return "None: plain cross-entropy (class weighting was not chosen for this trial)."


def output(c: CardInputs) -> str:
    ref = _best(c, "referable")
    base = "Probabilities of grades 0-4 (softmax) and the grade of the highest."
    if c.thresholds is not None:  # a regress head: its threshold is on the score
        base = ("A score (grade estimate) cut into grades 0-4 by 4 thresholds fitted on val, and "
                "P(referable) from the score (Platt scaling fitted on val, when the study fitted it).")  # fmt: skip
        if ref is not None:
            return base + f" Referable = score >= {ref['threshold']:.4g}, chosen on val."
    if ref is None:
        return base + f" Referable = predicted grade >= {REFERABLE_GRADE} (no threshold chosen)."
    point = (c.summary or {}).get("referable", {}).get("operating_point", {})
    return (base + f" Referable = p2+p3+p4 >= {ref['threshold']:.4g}, the threshold meeting "
            f"{point.get('target')} >= {point.get('value')} on val.")  # fmt: skip


def train_vs_test(c: CardInputs) -> str:
    return "None by design: one source, split at random by patient."


def code(c: CardInputs) -> str:
    return f"The retina-study harness, revision `{c.study.get('git_rev')}`; where it is published is the authors' to state."


def flow(c: CardInputs) -> str:
    parts = [
        f"{s} {_images(c, s)} images, {_referable(c, s)} referable"
        for s in ("train", "val", "test")
    ]
    return "; ".join(parts) + " (grade counts per split in the Data table)."


def characteristics(c: CardInputs) -> str:
    return "Grades per split in the Data table; the records hold no demographics (the authors' to add)."


def distributions(c: CardInputs) -> str:
    return "The Data table gives the grade distribution of train, val and test side by side."


def specification(c: CardInputs) -> str:
    return ("The full model: `model.pt` (architecture, weights, preprocessing, normalisation, "
            "temperature and threshold) and `model.onnx`; access is the authors' to state.")  # fmt: skip


def performance(c: CardInputs) -> str:
    ref = _best(c, "referable")
    if ref is None:
        return "Point estimates on test (Results table); no intervals were computed for this trial."
    lo, hi = ref["auroc_ci"]
    img, pat = ref["test_image"], ref["test_patient"]
    return (f"Referable AUROC {ref['auroc']:.3f} [{lo:.3f}, {hi:.3f}]; at the val-chosen threshold, "
            f"per image sensitivity {_pct(img['sensitivity'])}, specificity "
            f"{_pct(img['specificity'])}; per patient {_pct(pat['sensitivity'])} / "
            f"{_pct(pat['specificity'])} (95% intervals in the Referable DR section). No subgroups "
            "are recorded.")  # fmt: skip


def updating_result(c: CardInputs) -> str:
    return updating_result_text(_best(c, "calibration"))


def study_design(c: CardInputs) -> str:
    return ("Retrospective: the photographs and their grades existed before this study, which "
            "developed the model on them (model creation) and tested it on a patient-held-out "
            "part of the same data.")  # fmt: skip


def limitations(c: CardInputs) -> str:
    return (f"Internal validation only (one dataset, a random patient split); "
            f"{_images(c, 'test')} test images; hyperparameters chosen on val, so val numbers "
            "are optimistic. The authors' own limitations belong here too.")  # fmt: skip


def bad_input(c: CardInputs) -> str:
    return ("`retina.predict` grades what it can decode and gives every other image an `error`; "
            "there is no image-quality check beyond decoding.")  # fmt: skip


def software(c: CardInputs) -> str:
    return "The Versions table (at the study and at export)."


def initialisation(c: CardInputs) -> str:
    return (
        "ImageNet-pretrained weights (transfer learning)."
        if c.config.get("pretrained")
        else "Random (trained from scratch)."
    )


def training(c: CardInputs) -> str:
    return "The Configuration table (optimizer, learning rate, batch size, epochs, weight decay); random flips; the best epoch on val is kept."


def selection(c: CardInputs) -> str:
    return c.selection


def robustness(c: CardInputs) -> str | None:
    confirm = (c.summary or {}).get("confirm") or {}
    if confirm.get("status") not in ("ok", "one_cell"):
        return None
    return f"Each compared cell's best configuration retrained with {confirm.get('seeds')} new seeds (Confirm stage)."


def explainability(c: CardInputs) -> str:
    return "Grad-CAM of the best model's errors in the study's gallery/ folder."


def failures(c: CardInputs) -> str:
    return "The gallery of misgraded images (Grad-CAM) and the confusion matrices of the report."


# An item's `rule` names one of these; None from a rule: the records lack it (then the authors').
RULES = {
    "title": title,
    "abstract": abstract,
    "objectives": objectives,
    "data_source": data_source,
    "preparation": preparation,
    "outcome": outcome,
    "predictors": predictors,
    "predictor_input": predictor_input,
    "sample_size": sample_size,
    "missing": missing,
    "partitions": partitions,
    "model_building": model_building,
    "measures": measures,
    "updating_method": updating_method,
    "how_to_predict": how_to_predict,
    "class_imbalance": class_imbalance,
    "output": output,
    "train_vs_test": train_vs_test,
    "code": code,
    "flow": flow,
    "characteristics": characteristics,
    "distributions": distributions,
    "specification": specification,
    "performance": performance,
    "updating_result": updating_result,
    "limitations": limitations,
    "bad_input": bad_input,
    "software": software,
    "initialisation": initialisation,
    "training": training,
    "selection": selection,
    "robustness": robustness,
    "explainability": explainability,
    "failures": failures,
    "study_design": study_design,
    "external_testing": lambda c: external_testing(c.summary, str(c.trial.get("trial_id"))),
}


def _answer(item: Item, c: CardInputs) -> Answer:
    if item.not_applicable:
        return Answer(item, NOT_APPLICABLE, item.not_applicable)
    text = RULES[item.rule](c) if item.rule else None
    if text:
        return Answer(item, ANSWERED, text)
    return Answer(item, AUTHORS, item.authors or "what the study's records cannot say")


def answer_items(c: CardInputs) -> list[Answer]:
    return [_answer(item, c) for item in ITEMS]


def counts(answers: list[Answer]) -> dict[str, int]:
    seen = Counter(a.status for a in answers)
    return {status: seen.get(status, 0) for status in STATUSES}


def count_line(answers: list[Answer]) -> str:
    n = counts(answers)
    tripod = sum(a.item.source == TRIPOD for a in answers)
    claim = len(answers) - tripod
    return (f"Reporting checklists, {len(answers)} items ({tripod} of {TRIPOD}, and {claim} of "
            f"{CLAIM}'s {CLAIM_ITEMS}: a selection, where it asks what {TRIPOD} does not): "
            f"{n[ANSWERED]} answered from the study's records, {n[NOT_APPLICABLE]} not "
            f"applicable, {n[AUTHORS]} to be stated by the study's authors (see the last section).")  # fmt: skip


def render_checklist(answers: list[Answer]) -> list[str]:
    lines = [
        "## Reporting checklist",
        f"Each item of {TRIPOD} (Collins et al., BMJ 2024), paraphrased; then a selection of the "
        f"{CLAIM_ITEMS} items of {CLAIM} (Tejani et al., Radiology: Artificial Intelligence 2024, "
        f"doi:10.1148/ryai.240300): those {TRIPOD} does not ask in the same words, under their "
        "CLAIM 2024 numbers and names. Each is answered from this study's records, not applicable (why), or to be "
        "stated by the study's authors (what).",
        "",
        "| item | asks | status | answer |",
        "|---|---|---|---|",
    ]
    for a in answers:
        text = a.text.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {a.item.code} | {a.item.topic} | {a.status} | {text} |")
    return lines
