"""The model card walks TRIPOD+AI (and CLAIM where it differs): every item answered from the
records, not applicable with why, or left to the authors, never missing; the counts are in the
card's first lines; the referable threshold and temperature of summary.json are stated."""

from __future__ import annotations

import re
from dataclasses import replace

from study.conclude.card import render_card
from study.conclude.card_inputs import CardInputs
from study.conclude.checklist import (
    ANSWERED,
    AUTHORS,
    NOT_APPLICABLE,
    RULES,
    answer_items,
    counts,
)
from study.conclude.checklist_items import CLAIM, CLAIM_SELECTED, ITEMS

STUDY = {
    "name": "demo", "git_rev": "abc1234", "created": "2026-01-01",
    "data": {"path": "data/demo", "layout": "kaggle", "dataset_hash": "h", "image_size": 64,
             "preprocessing": "none", "split_seed": 0, "skipped": 0,
             "class_counts": {"train": [70, 10, 12, 5, 3], "val": [14, 2, 3, 1, 0],
                              "test": [15, 2, 2, 1, 1]}},
    "config": {"space": {"arch": {}, "lr": {}}, "num_samples": 8, "search": {"algorithm": "optuna"},
               "scheduler": {"name": "asha"}, "metric": {"name": "val_kappa"},
               "data": {"val_fraction": 0.15, "test_fraction": 0.15}},
}  # fmt: skip
TRIAL = {"trial_id": "t01", "best_epoch": 2, "epochs_run": 3, "test_kappa": 0.5}
REFERABLE = {
    "trial_id": "t01", "auroc": 0.91, "auroc_ci": [0.85, 0.96], "threshold": 0.3125,
    "val": {"n": 20, "referable": 4, "sensitivity": 1.0, "specificity": 0.75},
    "test_image": {"n": 21, "referable": 4, "sensitivity": 0.75, "sensitivity_ci": [0.5, 1.0],
                   "specificity": 0.8, "specificity_ci": [0.6, 0.95]},
    "test_patient": {"n": 11, "referable": 3, "sensitivity": 2 / 3, "sensitivity_ci": [0.3, 1.0],
                     "specificity": 0.875, "specificity_ci": [0.6, 1.0]},
}  # fmt: skip
CALIBRATION = {"trial_id": "t01", "temperature": 1.734, "test_ece": 0.12, "test_ece_scaled": 0.05}
SUMMARY = {
    "confirm": {"status": "ok", "seeds": 3, "note": ""}, "cells": [], "pairs": [],
    "bootstrap": {"test_patients": 11},
    "referable": {"operating_point": {"target": "sensitivity", "value": 0.9, "chosen_on": "val"},
                  "score": "p2+p3+p4", "best": REFERABLE},
    "calibration": {"bins": 10, "best": CALIBRATION},
}  # fmt: skip


def _inputs(summary, trial=TRIAL) -> CardInputs:
    return CardInputs(
        study=STUDY, trial=trial, config={"arch": "resnet18", "pretrained": True, "lr": 0.01},
        selection="Best of 8 by val kappa.", grade_names=[str(g) for g in range(5)],
        onnx_max_diff=1e-6, onnx_images=4, opset=18, versions={"torch": "2"}, date="today",
        summary=summary,
    )  # fmt: skip


def _first_lines_counts(card: str) -> tuple[int, int, int]:
    head = "\n".join(card.splitlines()[:8])
    found = re.search(r"(\d+) answered.*?, (\d+) not applicable, (\d+) to be stated", head)
    assert found, head
    return tuple(int(v) for v in found.groups())


def test_every_item_has_one_answer_and_the_counts_lead_the_card():
    assert all(item.rule in RULES for item in ITEMS if item.rule)  # no rule names nothing
    card = render_card(_inputs(SUMMARY))
    answers = answer_items(_inputs(SUMMARY))
    assert len(answers) == len(ITEMS) == 68  # 52 TRIPOD+AI (sub)items, 16 of CLAIM 2024
    # 5 not applicable and 25 only the authors can know (ethics, funding, setting, graders...)
    assert counts(answers) == {ANSWERED: 38, NOT_APPLICABLE: 5, AUTHORS: 25}
    assert _first_lines_counts(card) == (38, 5, 25)
    table = card[card.index("## Reporting checklist") :]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "| item |" not in line]
    assert len(rows) == 68 and all(row.split(" | ")[3].strip() for row in rows)  # none empty
    assert "| 17 | Ethics approval and consent | to be stated by the authors |" in table
    assert "| 6c |" in table and "no treatment enters it" in table


def test_the_records_answer_output_performance_and_updating():
    by_code = {a.item.code: a for a in answer_items(_inputs(SUMMARY))}
    assert "p2+p3+p4 >= 0.3125" in by_code["15"].text and "sensitivity >= 0.9" in by_code["15"].text
    assert "AUROC 0.910 [0.850, 0.960]" in by_code["23a"].text
    assert "T = 1.734" in by_code["12f"].text and "0.120" in by_code["24"].text
    assert "train 100 images, 20 referable" in by_code["20a"].text


def test_without_summary_the_study_cannot_say_robustness_and_says_so():
    answers = answer_items(_inputs(None))
    assert counts(answers) == {ANSWERED: 37, NOT_APPLICABLE: 5, AUTHORS: 26}
    assert _first_lines_counts(render_card(_inputs(None))) == (37, 5, 26)
    by_code = {a.item.code: a for a in answers}
    assert by_code["15"].text.endswith("(no threshold chosen).")
    # summary.json of another trial (exported with --trial): its threshold is not this model's
    other = render_card(_inputs(SUMMARY, TRIAL | {"trial_id": "t07"}))
    assert "0.3125" not in other and "No operating point was chosen for this trial" in other


def test_the_card_states_threshold_temperature_and_intervals():
    card = render_card(_inputs(SUMMARY))
    section = card[card.index("## Referable DR and calibration") : card.index("## How it was")]
    assert "threshold **0.3125**" in section and "T = **1.734**" in section
    assert "per patient (either eye): sensitivity 66.7% [30.0%, 100.0%]" in section
    assert "0.120 as trained, 0.050 after scaling" in section


def test_the_card_states_the_test_time_views_and_the_one_view_kappa():
    one = render_card(_inputs(SUMMARY))
    assert "Test-time augmentation: none; the study tested each image as is (`tta: 1`)" in one
    card = render_card(replace(_inputs(SUMMARY, TRIAL | {"test_kappa_1view": 0.4321}), tta=8))
    views = "identity, hflip, vflip, rot180, rot90, rot270, transpose, anti-transpose"
    assert f"softmax probabilities of 8 dihedral views of each image ({views}; `tta: 8`)" in card
    assert "`--tta 1` grades the image as is" in card
    assert "the image as is (one view) has test quadratic weighted kappa 0.4321" in card
    assert "the log of the mean softmax over 8 dihedral views (the graph includes them" in card


# CLAIM 2024's item numbers and names as published (Tejani et al., Radiology: Artificial
# Intelligence 2024;6(4):e240300; the 44-item list at pubs.rsna.org/page/ai/claim), for the
# items the card answers: each card entry must carry its number and start with its name.
CLAIM_2024 = {
    5: "Prospective or retrospective study", 11: "De-identification methods",
    13: "Image acquisition protocol", 16: "Source of reference standard annotations",
    17: "Annotation of test set",
    18: "Measures of inter- and intra-rater variability of features described by the annotators",
    20: "Level at which partitions are disjoint", 23: "Software libraries, frameworks, and packages",
    24: "Initialization of model parameters", 25: "Details of training approach",
    26: "Method of selecting the final model", 27: "Ensembling techniques",
    30: "Robustness or sensitivity analysis", 31: "Methods for explainability or interpretability",
    33: "Testing on external data", 39: "Failure analysis of incorrect results",
}  # fmt: skip


def test_claim_entries_carry_their_2024_numbers_and_names():
    claim = [item for item in ITEMS if item.source == CLAIM]
    assert CLAIM_SELECTED == tuple(CLAIM_2024) and len(claim) == 16
    for item in claim:
        number = int(item.code.removeprefix("CLAIM "))
        assert item.topic.startswith(CLAIM_2024[number]), item
    card = render_card(_inputs(SUMMARY))
    # the count line says the CLAIM entries are a selection of its 44 items
    assert "52 of TRIPOD+AI, and 16 of CLAIM 2024's 44: a selection" in "\n".join(
        card.splitlines()[:8]
    )
    table = card[card.index("## Reporting checklist") :]
    for number in (16, 17, 18):  # once merged as "annotators, tools, inter-rater variability"
        assert table.count(f"| CLAIM {number} | {CLAIM_2024[number]}") == 1
    assert (
        "| CLAIM 5 | Prospective or retrospective study (study design) | answered | Retrospective:"
        in table
    )
    assert "doi:10.1148/ryai.240300" in table


def test_a_regress_card_states_its_platt_fit_or_that_there_is_none():
    platt = {"trial_id": "t01", "head": "regress", "platt": {"slope": 1.8, "intercept": -2.9},
             "referable": {"test_ece": 0.21, "test_ece_ci": [0.15, 0.3], "test_ece_scaled": 0.04,
                           "test_ece_scaled_ci": [0.02, 0.09], "bins": [], "bins_scaled": []}}  # fmt: skip
    inputs = replace(_inputs(SUMMARY | {"calibration": {"bins": 10, "best": platt}}),
                     thresholds=[0.5, 1.5, 2.5, 3.5])  # fmt: skip
    card = render_card(inputs)
    assert "1 / (1 + exp(-(**1.8** x score + **-2.9**)))" in card
    assert "0.210 [0.150, 0.300] as trained, 0.040 [0.020, 0.090] calibrated" in card
    by_code = {a.item.code: a for a in answer_items(inputs)}
    assert "Platt scaling" in by_code["12f"].text and "0.040 calibrated" in by_code["24"].text
    assert "Referable = score >= 0.3125" in by_code["15"].text
    none = platt | {"platt": {"slope": None, "intercept": None}}  # val held one class only
    inputs = replace(inputs, summary=SUMMARY | {"calibration": {"bins": 10, "best": none}})
    assert "no Platt fit" in render_card(inputs)
    assert "no Platt fit" in {a.item.code: a for a in answer_items(inputs)}["12f"].text
