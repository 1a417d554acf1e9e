"""The analysis on a real Ray Tune sweep's results (conftest's `small_study`, made once per
pytest run): the report is written, holds every section, and the tables match the Parquet rows."""

from __future__ import annotations

import re

import pandas as pd

from study.analyze import tables
from study.analyze.load import load_study
from tests.helpers.cli import run_cli


def test_report_of_a_real_sweep(small_study, tmp_path):
    out = tmp_path / "report.html"  # the shared study folder stays as the sweep left it
    proc = run_cli("study.analyze", str(small_study), "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out)
    text = out.read_text(encoding="utf-8")
    sections = re.findall(r'<section id="([a-z]+)"', text)
    assert sections == [
        "summary", "course", "leaderboard", "curves", "init", "hparams", "confusion", "stopping",
        "comparison", "gallery", "referable", "external",
    ]  # fmt: skip
    assert 'src="data:image/jpeg;base64,' in text  # the sweep's gallery, inline
    assert "confirm: {compare: [arch, pretrained], seeds: 3}" in text  # what to run instead
    assert (tmp_path / "report.summary.json").exists()
    # 2 finished trials: importances skipped with a note; the best trial's val + test matrices
    assert "needs at least 4 finished trials" in text
    assert text.count("Plotly.newPlot(") >= 6

    study = load_study(small_study)
    trials = pd.read_parquet(small_study / "trials.parquet")
    board = tables.leaderboard(study.trials, study.hyperparameters, study.metric, study.mode)
    assert len(board) == len(trials) == 2
    assert board["best_val_kappa"].iloc[0] == trials["best_val_kappa"].max()
    counts = study.meta["data"]["class_counts"]["val"]
    course = tables.course_table(study.trials, study.score_column, study.mode, study.class_counts)
    assert course["val_acc"].iloc[-1] == counts[0] / sum(counts)  # the majority-class row
    tested = study.trials[study.trials["test_acc"].notna()]["trial_id"].item()
    assert tables.tested_epoch(study.confusion, tested) is not None
