"""After `--more`: which confirm cells now have a better search trial than the one their
confirm runs retrained (their runs stay those of the earlier best; not re-planned yet).

    for line in stale_cells(study, store): print(line)
"""

from __future__ import annotations

from study.conclude.confirm import cell_name, confirm_cells
from study.define.schema import StudyConfig
from study.record.layout import Stage
from study.record.results import ResultsStore


def stale_cells(study: StudyConfig, store: ResultsStore) -> list[str]:
    """One line per confirm cell whose best search configuration is not the one its confirm
    runs were trained with (none when the study has no confirm runs)."""
    runs = [
        info.get("config") or {}
        for info in store.trials.values()
        if info.get("stage") == Stage.CONFIRM
    ]
    if not runs:
        return []
    cells, _ = confirm_cells(study, store.trials_frame(), store.hyperparameters)
    compare = list(study.confirm.compare)
    lines = []
    for cell in cells:
        key = {d: cell[d] for d in compare}
        mine = [r for r in runs if all(r.get(d) == v for d, v in key.items())]
        same = [r for r in mine if all(r.get(k) == v for k, v in cell.items())]
        if mine and not same:
            lines.append(
                f"confirm: {cell_name(key)} has a new best search trial since its confirm runs; "
                "its runs (and the comparison) are of the earlier best (docs/growing.md)"
            )
    return lines
