"""The study's conclusions as numbers, written by the sweep once its runs are in.

`summary.json` is the analysis's (`study.analyze.summary`, documented in docs/results.md):
the sweep writes it as soon as the confirm stage has tested its runs, so the model card of
the exported winner can state the comparison, and `python -m study.analyze` writes the same
file again (the bootstrap is seeded). Pure numpy/scipy: no torch here.
"""

from __future__ import annotations

from pathlib import Path

from study.analyze.load import load_study, read_predictions
from study.analyze.summary import build_summary, summary_text
from study.record.disk import write_atomic
from study.record.layout import SUMMARY_FILE
from study.record.results import ResultsStore


def write_summary(folder: Path, store: ResultsStore, resamples: int = 10_000) -> str:
    """Rebuild the Parquet files, compute summary.json from them; returns a line to print."""
    store.flush()  # the analysis reads the Parquet files: they must hold every test result
    summary = build_summary(load_study(folder), read_predictions(folder), resamples)
    write_atomic(folder / SUMMARY_FILE, lambda p: p.write_text(summary_text(summary)))
    sentences = [pair["sentence"] for pair in summary.get("pairs", [])]
    status = summary.get("confirm", {}).get("note") or "; ".join(sentences)
    return f"summary: {folder / 'summary.json'}" + (f" ({status})" if status else "")
