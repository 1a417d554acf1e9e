"""A study key lives on its dataclass field (default, doc, rule); the parser and `--set` read the
fields, so a key added there is parsed with its default and accepted by `--set` with no other edit.

    .venv/bin/python -m pytest tests/test_schema_keys.py
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, is_dataclass

import pytest
import yaml

from study.define.config import StudyConfig, key
from study.define.overrides import Problem
from study.define.schema import KEYS, load_study, study_from_dict, study_to_dict
from study.define.section import Section

SPACE = {"arch": "resnet18", "pretrained": False, "lr": 0.01, "batch_size": 8, "epochs": 2,
         "weight_decay": 0.0}  # fmt: skip
MINIMAL = {"name": "m", "data": {"path": "data/x", "image_size": 32}, "space": SPACE}


def _sections(cls: type):
    for f in fields(cls):
        default = f.default
        if is_dataclass(default):
            yield f.name, default


def test_a_key_left_out_takes_the_default_of_its_field(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    cfg = load_study(path)
    for f in fields(StudyConfig):
        if f.default is not MISSING:
            assert getattr(cfg, f.name) == f.default, f.name
    assert cfg.data.val_fraction == 0.15 and cfg.test_top_k == 3


def test_every_key_has_a_doc_and_every_field_is_a_key():
    for f in fields(StudyConfig):
        assert f.metadata.get("doc"), f"StudyConfig.{f.name} has no doc"
        assert f.name in KEYS
    for name, section in _sections(StudyConfig):
        if name == "operating_point":  # written as its one target: {sensitivity: 0.9}
            continue
        for f in fields(section):
            assert f.metadata.get("doc"), f"{name}.{f.name} has no doc"
            assert f.name in KEYS[name], f"--set {name}.{f.name} would be refused"


def test_study_to_dict_walks_the_fields_not_a_list():
    cfg = study_from_dict(MINIMAL)
    out = study_to_dict(cfg)
    assert list(out) == [f.name for f in fields(StudyConfig)]
    assert yaml.safe_load(yaml.safe_dump(out))["confirm"]["seeds"] == 0


def test_a_new_field_is_read_with_its_default_and_rule():
    @dataclass(frozen=True)
    class Extra:
        margin: float = key(0.05, "half-width the confirm stage aims for", gt=0.0)
        mode: str = key("a", "one of two", choices=("a", "b"))
        rounds: int = key(3, "how many", lo=1)

    assert Section({}, "x", ["margin", "mode", "rounds"]).build(Extra) == Extra()
    built = Section({"margin": 0.1, "mode": "b"}, "x", ["margin", "mode", "rounds"]).build(Extra)
    assert (built.margin, built.mode, built.rounds) == (0.1, "b", 3)
    for bad, says in [({"margin": 0}, "must be > 0.0"), ({"mode": "c"}, "unknown value 'c'"),
                      ({"rounds": 0}, "must be >= 1")]:  # fmt: skip
        with pytest.raises(Problem, match=says):
            Section(bad, "x", ["margin", "mode", "rounds"]).build(Extra)
