"""`python -m study.sweep ... --skip-bad` leaves bad images out as `retina.train --skip-bad`
does: the flag is `--set data.skip_bad=true`, and the preflight (no Ray) builds the cache
without the bad file instead of stopping with the message that suggests the flag.

    .venv/bin/pytest tests/test_sweep_skip_bad.py
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from retina.errors import RetinaError
from study.define.schema import study_to_dict
from study.run.preflight import preflight
from study.sweep import load, parse_args, resume_command
from tests.helpers.cli import ROOT

DEMO = str(ROOT / "search_spaces" / "demo.yaml")
SMALL = ["--set", "space.pretrained=false", "--set", "data.image_size=32"]


def test_the_flag_is_the_schema_key():
    assert load(parse_args([DEMO, "--skip-bad"])).data.skip_bad is True
    assert load(parse_args([DEMO])).data.skip_bad is False
    # the flag and the key name one setting: resolved alike, so --resume accepts either
    flag = study_to_dict(load(parse_args([DEMO, "--skip-bad"])))
    key = study_to_dict(load(parse_args([DEMO, "--set", "data.skip_bad=true"])))
    assert flag == key


@pytest.fixture
def one_truncated(synthetic_data, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    victim = sorted((data / "train").glob("*.jpeg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated JPEG, as real datasets have
    return data


def test_the_sweep_stops_on_a_bad_image_and_suggests_the_flag_it_accepts(one_truncated, tmp_path):
    args = parse_args([DEMO, "--data", str(one_truncated), *SMALL])
    study = load(args)
    with pytest.raises(RetinaError, match="pass --skip-bad to leave them out"):
        preflight(study, tmp_path / "r" / "a", study_to_dict(study), False, tmp_path / "cache")
    # what the message suggests, given to the sweep
    study = load(parse_args([DEMO, "--data", str(one_truncated), *SMALL, "--skip-bad"]))
    data = preflight(study, tmp_path / "r" / "b", study_to_dict(study), False, tmp_path / "cache")
    assert len(data.cache.skipped_indices) == 1
    used = sum(sum(counts) for counts in data.class_counts().values())
    assert used == len(data.labels) - 1  # the truncated image is in no split


def test_the_resume_hint_repeats_every_setting_of_the_study():
    argv = [DEMO, "--data", "/data/eye pacs", "--cache-dir", "/big/cache", "--skip-bad",
            "--set", "data.image_size={choice: [256, 512]}", "--name", "smoke", "--results", "r"]  # fmt: skip
    hint = resume_command(parse_args(argv))
    assert hint.startswith(f"python -m study.sweep {DEMO} --resume ")
    # the hint parses back to the same study, with --resume
    again = parse_args(shlex.split(hint)[3:])
    assert again.resume and load(again) == load(parse_args(argv))
    assert (again.cache_dir, again.results, again.skip_bad) == ("/big/cache", "r", True)
