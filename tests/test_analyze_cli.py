"""`python -m study.analyze` end to end: the report file, the folder index, and every edge case
with its one-line message and exit 2. The report, the no-torch import check and --open run the
command in a subprocess, as a user does; the edge cases call its main in this process (the same
code and output, without ~2 s of imports each)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from tests.helpers.analyze_fixtures import DEFAULT_TRIALS, TrialSpec, make_results, write_parquet
from tests.helpers.cli import assert_fails

ROOT = Path(__file__).resolve().parents[1]
SECTION_IDS = ["summary", "course", "leaderboard", "curves", "init", "hparams", "confusion"]


def run_analyze(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "study.analyze", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_report_is_one_file_with_plotly_embedded_once(tmp_path):
    folder = make_results(tmp_path)
    result = run_analyze(folder)  # the command, as a user runs it
    assert result.returncode == 0, result.stderr
    report = folder / "report.html"
    assert result.stdout.strip() == str(report) and result.stderr == ""
    text = report.read_text(encoding="utf-8")
    library = get_plotlyjs()
    assert text.count(library[:300]) == 1 and text.count(library[-300:]) == 1
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text)  # nothing fetched
    ids = re.findall(r'<section id="([a-z]+)"', text)
    assert ids == SECTION_IDS + ["stopping", "comparison", "gallery", "referable", "external"]
    assert "No gallery in this study" in text  # the fixture has no gallery/: one line says so
    # curves, init, parcoords, metric-vs-hparam, importance, stopping, tuning curve +
    # confusion: t01 and t00 on val and test, t04 on val
    assert len(re.findall(r'class="plotly-graph-div"', text)) == 7 + 5
    assert text.count("Plotly.newPlot(") == 12
    assert 'class="status-ERROR"' in text and "loss is nan at epoch 3" in text
    assert "80.8 %" in text and "82.0 %" in text  # the course report's numbers
    assert "PED-ANOVA" in text
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temp


def test_no_ray_or_torch_is_imported(tmp_path):
    folder = make_results(tmp_path)
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['study.analyze', {str(folder)!r}]\n"
        "try:\n    runpy.run_module('study.analyze', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch', 'torchvision'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_out_file_and_top_k(tmp_path, analyze):
    folder = make_results(tmp_path)
    out = tmp_path / "elsewhere" / "mine.html"
    result = analyze(folder, "--out", out, "--top", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out) and not (folder / "report.html").exists()
    text = out.read_text(encoding="utf-8")
    assert text.count("Plotly.newPlot(") == 7 + 2  # the best trial's val and test matrices
    assert (out.parent / "mine.summary.json").exists() and not (folder / "summary.json").exists()


def test_open_hands_the_report_to_the_web_browser(tmp_path):
    folder = make_results(tmp_path)
    env = os.environ | {"BROWSER": "echo opened %s"}  # webbrowser runs $BROWSER with the URL
    result = subprocess.run(
        [sys.executable, "-m", "study.analyze", str(folder), "--open"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"opened {(folder / 'report.html').as_uri()}" in result.stdout


def test_a_folder_of_studies_gets_an_index(tmp_path, analyze):
    a = make_results(tmp_path, name="alpha")
    b = make_results(tmp_path, DEFAULT_TRIALS[:3], name="beta")
    broken = make_results(tmp_path, name="gamma")
    (broken / "study.json").write_text("{not json")
    result = analyze(tmp_path)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip().splitlines()
    assert printed == [str(a / "report.html"), str(b / "report.html"), str(tmp_path / "index.html")]
    assert "skipped" in result.stderr and "gamma" in result.stderr
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'href="alpha/report.html"' in index and 'href="beta/report.html"' in index
    assert "gamma" in index and "no report" in index
    assert_fails(analyze(tmp_path, "--out", tmp_path / "x.html"), "--out", "3 studies")


def test_a_study_stopped_half_way_still_gets_a_report(tmp_path, analyze):
    specs = DEFAULT_TRIALS[:3] + [
        TrialSpec("t07", "resnet50", True, 1e-3, 8, [0.71], [0.12], status="RUNNING"),
        TrialSpec("t08", "resnet50", False, 1e-3, 8, [], [], status="PENDING"),
    ]
    folder = make_results(tmp_path, specs)
    result = analyze(folder)
    assert result.returncode == 0, result.stderr
    text = (folder / "report.html").read_text(encoding="utf-8")
    assert "1 trial(s) RUNNING" in text and "1 trial(s) PENDING" in text
    assert 'class="status-RUNNING"' in text and 'class="status-PENDING"' in text
    assert "needs at least 4 finished trials" in text  # 3 finished: importance skipped


def test_path_that_does_not_exist(tmp_path, analyze):
    assert_fails(analyze(tmp_path / "nope"), "does not exist", "nope")


def test_folder_with_no_study(tmp_path, analyze):
    (tmp_path / "empty").mkdir()
    assert_fails(analyze(tmp_path / "empty"), "no study in", "study.json")


def test_study_with_no_finished_epoch(tmp_path, analyze):
    pending = [TrialSpec("t0", "resnet18", True, 1e-3, 8, [], [], status="PENDING")]
    folder = make_results(tmp_path, pending)
    assert_fails(analyze(folder), "no finished epoch yet", "epochs.parquet is empty")
    for name in ("epochs.parquet", "trials.parquet", "confusion.parquet"):
        (folder / name).unlink()
    assert_fails(analyze(folder), "no finished epoch yet", "no epochs.parquet")


def test_parquet_missing_columns(tmp_path, analyze):
    folder = make_results(tmp_path)
    epochs = pd.read_parquet(folder / "epochs.parquet").drop(columns=["val_kappa", "train_loss"])
    write_parquet(folder / "epochs.parquet", epochs)
    assert_fails(analyze(folder), "epochs.parquet", "train_loss, val_kappa")


def test_trials_missing_a_hyperparameter_column(tmp_path, analyze):
    folder = make_results(tmp_path)
    trials = pd.read_parquet(folder / "trials.parquet").drop(columns=["lr"])
    write_parquet(folder / "trials.parquet", trials)
    assert_fails(analyze(folder), "trials.parquet", "lacks the column(s) lr")


def test_parquet_written_by_another_tool(tmp_path, analyze):
    folder = make_results(tmp_path)
    (folder / "trials.parquet").write_text("trial_id,status\nt0,TERMINATED\n")
    assert_fails(analyze(folder), "trials.parquet", "not a readable Parquet file")


def test_parquet_with_the_wrong_types(tmp_path, analyze):
    folder = make_results(tmp_path)
    epochs = pd.read_parquet(folder / "epochs.parquet")
    epochs["val_acc"] = epochs["val_acc"].map(lambda v: f"{v:.0%}")
    write_parquet(folder / "epochs.parquet", epochs)
    assert_fails(analyze(folder), "epochs.parquet", "val_acc", "expected numbers")


def test_study_json_invalid_or_missing(tmp_path, analyze):
    folder = make_results(tmp_path)
    meta = json.loads((folder / "study.json").read_text())
    meta["data"]["class_counts"]["val"] = [70, None, 12, 5, 3]
    (folder / "study.json").write_text(json.dumps(meta))
    assert_fails(analyze(folder), "study.json", "class_counts")
    (folder / "study.json").write_text('{"name": "x",')
    assert_fails(analyze(folder), "study.json", "not valid JSON")
    (folder / "study.json").write_text(json.dumps({"name": "x"}))
    assert_fails(analyze(folder), "study.json", "hyperparameters, metric, data")
    (folder / "study.json").unlink()
    assert_fails(analyze(folder), "no study.json")


def test_unwritable_out(tmp_path, analyze):
    folder = make_results(tmp_path)
    assert_fails(analyze(folder, "--out", tmp_path), "cannot write", "--out FILE")


@pytest.mark.parametrize("top", ["0", "x"])
def test_bad_top(tmp_path, top, analyze):
    result = analyze(make_results(tmp_path), "--top", top)
    assert result.returncode == 2 and "--top must be a whole number" in result.stderr


def test_serve_renders_one_running_study_only(tmp_path, analyze):
    folder = make_results(tmp_path)
    for extra in ([], ["--running", "6", "--out", tmp_path / "r.html"]):
        assert_fails(analyze(folder, "--serve", *extra), "--serve renders one running study")
    assert_fails(analyze(tmp_path, "--serve", "--running", "6"), "--serve", "give its folder")
    assert not (folder / "report.html").exists()
