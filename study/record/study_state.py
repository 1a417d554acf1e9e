"""Where a study stands, kept in its `study.json`: finished or not, and how it grew.

    mark_finished(folder)              # the sweep, once the conclusion and the report are done
    finished_at(folder)                # "2026-12-08T03:30:00+00:00", or None while unfinished
    add_growth(folder, 4, "tune-more-1")  # `--more 4`: unfinished again until it concludes

A second `python -m study.sweep SPACE` on a finished study reads `finished` and says so
instead of refusing; `--more N` records each growth (its trials and its Tune experiment) so
that `--resume` after a kill continues the same experiment. Nothing else in study.json changes:
its `config` stays the space the study started with.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from study.record.disk import write_json_atomic
from study.record.layout import STUDY_JSON, TUNE_DIR

FINISHED_KEY = "finished"  # ISO time the study last concluded; null while it runs or grows
GROWN_KEY = "grown"  # [{"trials": N, "experiment": "tune-more-1", "at": ISO time}, ...]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_record(folder: Path) -> dict | None:
    """The study.json of `folder`, None when there is none or it is unreadable."""
    try:
        return json.loads((Path(folder) / STUDY_JSON).read_text())
    except (OSError, ValueError):
        return None


def finished_at(folder: Path) -> str | None:
    record = read_record(folder)
    return record.get(FINISHED_KEY) if isinstance(record, dict) else None


def _update(folder: Path, **changes) -> None:
    record = read_record(folder) or {}
    record.update(changes)
    write_json_atomic(Path(folder) / STUDY_JSON, record)


def mark_finished(folder: Path) -> None:
    _update(folder, **{FINISHED_KEY: _now()})


def growth(folder: Path) -> list[dict]:
    """Every `--more` of the study, oldest first."""
    record = read_record(folder) or {}
    return list(record.get(GROWN_KEY) or [])


def growth_experiment(index: int) -> str:
    """The Tune experiment folder of the `index`-th growth (1-based): `tune-more-1`, ... (its
    name starts with `tune`, as the checkpoint clean-up and the export look for)."""
    return f"{TUNE_DIR}-more-{index}"


def add_growth(folder: Path, trials: int) -> dict:
    """Record a `--more trials`; the study is unfinished until it concludes again."""
    grown = growth(folder)
    step = {"trials": int(trials), "experiment": growth_experiment(len(grown) + 1), "at": _now()}
    _update(folder, **{GROWN_KEY: [*grown, step], FINISHED_KEY: None})
    return step
