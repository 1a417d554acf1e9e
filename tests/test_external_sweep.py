"""One real sweep with an external test set (a second synthetic folder, another seed), through
to its predictions, summary.json's `external` block, the report's section and the card's
external-testing answer, with `confirm.test` on it (the pairs compared on the external set).

    .venv/bin/pytest tests/test_external_sweep.py
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from retina.synthetic import generate
from study.record.predictions import COLUMNS
from tests.helpers.cli import run_cli
from tests.helpers.processes import read_frame
from tests.test_confirm_sweep import sweep_args

pytestmark = pytest.mark.slow
EXTERNAL_IMAGES = 48


@pytest.fixture(scope="module")
def swept(tmp_path_factory, synthetic_data):
    """The sweep of tests/test_confirm_sweep.py's heads (2 search trials, a confirm run per
    head), 1 epoch, the winner exported, tested on `ext` too; returns (folder, stdout)."""
    tmp = tmp_path_factory.mktemp("external")
    ext = generate(tmp / "ext", n=EXTERNAL_IMAGES, size=64, seed=1)
    args = sweep_args(synthetic_data, tmp, "ext-study",
                      "--set", "space.epochs=1", "--set", "space.warmup_epochs=0",
                      "--set", "max_concurrent=2", "--set", "export=true",
                      "--external", f"ext={ext}", "--set", "confirm.test=ext")  # fmt: skip
    proc = run_cli(*args, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return tmp / "ext-study", proc.stdout


def test_each_run_is_tested_once_on_the_external_set(swept):
    folder, stdout = swept
    assert "external set ext: " in stdout and "external test sets (each run once" in stdout
    record = json.loads((folder / "study.json").read_text())
    assert record["config"]["external"][0]["name"] == "ext"
    assert record["external"]["ext"]["n_images"] == EXTERNAL_IMAGES
    trials = read_frame(folder, "trials.parquet").set_index("trial_id")
    confirm = trials.index[trials["stage"] == "confirm"].tolist()
    table = pd.read_parquet(folder / "predictions")  # the folder still reads as one table
    assert list(table.columns) == COLUMNS
    rows = table[table["split"] == "external:ext"]
    summary = json.loads((folder / "summary.json").read_text())
    best = summary["external"]["ext"]["best"]["trial_id"]
    assert sorted(rows["trial_id"].unique()) == sorted([best, *confirm])
    assert (rows.groupby("trial_id").size() == EXTERNAL_IMAGES).all()
    for trial_id in [best, *confirm]:
        assert (folder / "predictions" / f"{trial_id}.external.ext.parquet").exists()
    # the rows are the ones the numbers came from
    own = rows[rows["trial_id"] == best]
    block = summary["external"]["ext"]
    assert block["best"]["acc"] == pytest.approx((own["true"] == own["predicted"]).mean())
    assert sum(map(sum, block["best"]["confusion"])) == EXTERNAL_IMAGES
    assert len(block["confirm"]) == len(confirm) == 2
    assert block["images"] == EXTERNAL_IMAGES and block["grade_shares"]["development_test"]
    # nothing fitted on the set: the threshold is the one chosen on the development val
    if summary["referable"]["best"]["trial_id"] == best:
        assert block["best"]["referable"]["threshold"] == summary["referable"]["best"]["threshold"]


def test_confirm_test_compares_the_heads_on_the_external_set(swept):
    folder, _ = swept
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["confirm"]["test"] == "ext" and summary["confirm"]["status"] == "ok"
    assert summary["bootstrap"]["test_images"] == EXTERNAL_IMAGES
    (pair,) = summary["pairs"]
    assert pair["sentence"].startswith("On the external set ext: ")


def test_card_answers_external_testing_with_the_numbers(swept):
    folder, _ = swept
    summary = json.loads((folder / "summary.json").read_text())
    best = summary["external"]["ext"]["best"]
    (line,) = [x for x in (folder / "best" / "card.md").read_text().splitlines()
               if "Tested once on external data" in x]  # fmt: skip
    assert "| CLAIM 33 | Testing on external data |" in line and "| answered |" in line
    assert f"kappa {best['kappa']:.3f} [" in line and f"ext ({EXTERNAL_IMAGES} images" in line


def test_report_has_a_section_per_external_set(swept, analyze):
    folder, _ = swept
    result = analyze(folder, "--resamples", "500")
    assert result.returncode == 0, result.stderr
    page = (folder / "report.html").read_text()
    assert "12 External test sets" in page and "<h3>ext</h3>" in page
    assert f"{EXTERNAL_IMAGES} images of" in page and "Grades of ext and of the development" in page
