"""Reliability diagrams as pure figure functions: summary.json's `calibration` runs -> a tidy
frame -> `go.Figure`. One point per equal-mass bin on test: its mean predicted probability
against how often the event happened in it; on the diagonal, "0.3" means three in ten.

    frame = reliability_frame([calibration["best"]], "referable")  # P(referable), either head
    frame = reliability_frame(calibration["confirm"])              # top label, classify heads
    fig = reliability_figure(frame, REFERABLE_AXES, bins=10, title="best trial")
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

COLUMNS = ["run", "head", "stage", "bin", "n", "predicted", "observed"]
STAGES = {"bins": "as trained", "bins_scaled": "calibrated on val"}
# (what is predicted, x axis, y axis)
REFERABLE_AXES = ("P(referable)", "mean P(referable) in the bin", "share referable (grade >= 2)")
TOP_LABEL_AXES = ("the top grade", "mean confidence (top grade)", "accuracy")


def reliability_frame(runs: list[dict], block: str | None = None) -> pd.DataFrame:
    """One row per (run, stage, bin): `stage` "as trained" or "calibrated on val",
    `predicted` the bin's mean probability, `observed` the share of its images where the event
    happened. `block`: the runs' sub-block holding the bins ("referable": P(referable));
    None: the run's own (a classify head's top label). Runs without the bins are left out."""
    rows = []
    for run in runs:
        source = (run or {}).get(block) if block else run
        if not source or "bins" not in source:
            continue
        for key, stage in STAGES.items():
            rows += [
                {"run": str(run["trial_id"]), "head": run.get("head", "classify"),
                 "stage": stage, "bin": i, "n": b["n"], "predicted": b["confidence"],
                 "observed": b["accuracy"]}
                for i, b in enumerate(source[key])
            ]  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def reliability_figure(
    frame: pd.DataFrame, axes: tuple[str, str, str], bins: int, title: str
) -> go.Figure:
    """Observed share against mean predicted probability per bin: as trained (solid) and
    calibrated (dashed), one colour per run; `axes` (what, x title, y title)."""
    what, x_title, y_title = axes
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line={"color": "#9aa5b1", "dash": "dot"}))  # fmt: skip
    for i, (run, rows) in enumerate(frame.groupby("run", sort=False)):
        color = qualitative.Plotly[i % len(qualitative.Plotly)]
        for stage, dash in zip(STAGES.values(), ("solid", "dash"), strict=True):
            points = rows[rows["stage"] == stage].sort_values("bin")
            fig.add_trace(go.Scatter(
                x=points["predicted"], y=points["observed"], mode="lines+markers",
                name=f"{run} ({rows['head'].iloc[0]}): {stage}",
                line={"color": color, "dash": dash},
                text=[f"{n} images" for n in points["n"]],
            ))  # fmt: skip
    fig.update_layout(
        template="plotly_white", height=420, width=620,
        title=f"Reliability of {what} on test, {title} ({bins} equal-mass bins)",
        xaxis={"title": x_title, "range": [0, 1]}, yaxis={"title": y_title, "range": [0, 1]},
        legend={"orientation": "h", "y": -0.25},
    )  # fmt: skip
    return fig
