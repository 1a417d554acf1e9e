"""The reliability diagram of P(referable) (ICDR grade >= 2), for either head, as a pure
figure function: summary.json's `calibration` block -> a tidy frame -> `go.Figure`.

    frame = referable_reliability_frame([calibration["best"]])
    fig = referable_reliability_figure(frame, bins=10, title="best trial")

One point per equal-mass bin of P(referable) on test: its mean P against the share of its
images that are referable. On the diagonal, "P = 0.3" means three in ten are referable.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

COLUMNS = ["run", "head", "stage", "bin", "n", "predicted", "observed"]
STAGES = {"bins": "as trained", "bins_scaled": "calibrated on val"}


def referable_reliability_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per (run, stage, bin) from each run's `referable` calibration block: `stage` is
    "as trained" or "calibrated on val", `predicted` the bin's mean P(referable), `observed`
    the share of its images that are referable. Runs without the block are left out."""
    rows = [
        {"run": str(run["trial_id"]), "head": run.get("head", "classify"), "stage": stage,
         "bin": i, "n": b["n"], "predicted": b["confidence"], "observed": b["accuracy"]}
        for run in runs if run and run.get("referable")
        for key, stage in STAGES.items()
        for i, b in enumerate(run["referable"][key])
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def referable_reliability_figure(frame: pd.DataFrame, bins: int, title: str) -> go.Figure:
    """Observed referable share against mean P(referable) per bin: as trained (solid) and
    calibrated (dashed), one colour per run."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line={"color": "#9aa5b1", "dash": "dot"}))  # fmt: skip
    for i, (run, rows) in enumerate(frame.groupby("run", sort=False)):
        color = qualitative.Plotly[i % len(qualitative.Plotly)]
        for stage, dash in zip(STAGES.values(), ("solid", "dash"), strict=True):
            points = rows[rows["stage"] == stage].sort_values("bin")
            fig.add_trace(go.Scatter(
                x=points["predicted"], y=points["observed"], mode="lines+markers",
                name=f"{run} ({points['head'].iloc[0] if len(points) else ''}): {stage}",
                line={"color": color, "dash": dash},
                text=[f"{n} images" for n in points["n"]],
            ))  # fmt: skip
    fig.update_layout(
        template="plotly_white", height=420, width=620,
        title=f"Reliability of P(referable) on test, {title} ({bins} equal-mass bins)",
        xaxis={"title": "mean P(referable) in the bin", "range": [0, 1]},
        yaxis={"title": "share referable (grade >= 2)", "range": [0, 1]},
        legend={"orientation": "h", "y": -0.25},
    )  # fmt: skip
    return fig
