"""Whether a trial of a study already finished, read from its results folder in the trial's own
process (the trainable asks before it trains: a trial Ray restarts after a killed driver is not
run again).

    trial_finished(results_folder, "f18e9c72")   # True once the journal records it TERMINATED
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from study.record.journal import upgrade
from study.record.layout import JOURNAL_FILE, TRIALS_FILE, Status
from study.record.results import ResultsStore


def trial_finished(folder: Path, trial_id: str) -> bool:
    """Whether the study's journal (else `trials.parquet`) records this trial as finished.

    Ray snapshots its experiment state every ~10 s; after the driver is killed, `--resume` can
    think a trial that finished is still running and restart it from an older checkpoint. The
    journal is written when the trial finishes (its epochs first), so it knows better; the
    Parquet files may lag it by a few seconds.
    """
    journal = Path(folder, JOURNAL_FILE)
    if journal.exists():
        needle = trial_id.encode()  # only this trial's lines are parsed: a cheap scan
        lines = [line for line in _complete_lines(journal) if needle in line]
        store = ResultsStore(Path(folder), [], "", "max", journal=False)
        events, _ = upgrade([json.loads(line) for line in lines], str(journal))
        store.replay([e for e in events if _about(e, trial_id)])
        return store.trials.get(trial_id, {}).get("status") == Status.TERMINATED
    path = Path(folder, TRIALS_FILE)
    if not path.exists():
        return False
    table = pq.read_table(path, columns=["trial_id", "status"]).to_pydict()
    return any(
        t == trial_id and s == Status.TERMINATED
        for t, s in zip(table["trial_id"], table["status"], strict=True)
    )


def _complete_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()  # a line being appended is not yet one


def _about(event: dict, trial_id: str) -> bool:
    return event["event"] == "restore" or event.get("trial") == trial_id
