"""The study's `operating_point` (the referable threshold's target, met on val): a default, one
target of two, a share in (0, 1]; every mistake names the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retina.errors import RetinaError
from study.define.schema import OperatingPointConfig, study_from_dict, study_to_dict

DEMO = Path(__file__).resolve().parents[1] / "search_spaces" / "demo.yaml"  # no Ray import


def _doc(**extra) -> dict:
    return yaml.safe_load(DEMO.read_text()) | extra


def test_default_is_sensitivity_90_and_it_round_trips():
    cfg = study_from_dict(_doc(), "demo.yaml")
    assert cfg.operating_point == OperatingPointConfig("sensitivity", 0.9)
    assert study_to_dict(cfg)["operating_point"] == {"sensitivity": 0.9}
    assert study_from_dict(study_to_dict(cfg)) == cfg


def test_a_specificity_target_and_a_set_override():
    cfg = study_from_dict(_doc(operating_point={"specificity": 0.95}), "s.yaml")
    assert cfg.operating_point == OperatingPointConfig("specificity", 0.95)
    assert study_from_dict(study_to_dict(cfg)) == cfg
    over = study_from_dict(_doc(), "s.yaml", ["operating_point.sensitivity=0.975"])
    assert over.operating_point == OperatingPointConfig("sensitivity", 0.975)
    assert study_from_dict(_doc(operating_point={"sensitivity": 1})).operating_point.value == 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, "s.yaml: operating_point: names no target; write one target met on val"),
        ({"sensitivity": 0.9, "specificity": 0.9}, "operating_point: names both sensitivity"),
        ({"recall": 0.9}, "s.yaml: operating_point.recall: unknown key"),
        ({"sensitivity": 1.5}, "operating_point.sensitivity: must be > 0.0 and <= 1.0, got 1.5"),
        ({"sensitivity": 0}, "operating_point.sensitivity: must be > 0.0"),
        ({"specificity": "high"}, "operating_point.specificity: expected a number"),
        (0.9, "s.yaml: operating_point: expected a mapping, got 0.9"),
    ],
)
def test_mistakes_name_file_key_and_fix(value, expected):
    with pytest.raises(RetinaError) as info:
        study_from_dict(_doc(operating_point=value), "s.yaml")
    assert expected in str(info.value)


def test_a_set_that_adds_a_second_target_is_named():
    doc = _doc(operating_point={"sensitivity": 0.9})
    with pytest.raises(RetinaError, match=r"--set operating_point.specificity=0.9: .*both"):
        study_from_dict(doc, "s.yaml", ["operating_point.specificity=0.9"])
