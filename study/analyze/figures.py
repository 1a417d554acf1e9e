"""The report's training figures as pure functions: dataframes in, `go.Figure` out.

Learning curves, pretrained vs scratch, confusion matrices and early stopping. Colour always
means the architecture; a dashed line means trained from scratch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
CURVE_METRICS = {"acc": "accuracy", "loss": "loss", "kappa": "quadratic weighted kappa"}
GRADES = ("0 none", "1 mild", "2 moderate", "3 severe", "4 proliferative")


def arch_colours(archs) -> dict[str, str]:
    """A stable colour per architecture (sorted names, Plotly's qualitative palette)."""
    palette = qualitative.Plotly
    return {a: palette[i % len(palette)] for i, a in enumerate(sorted(set(archs)))}


def format_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return "—" if math.isnan(value) else f"{value:.3g}"
    return "—" if value is None else str(value)


def config_text(row: pd.Series, hyperparameters: list[str]) -> str:
    """`arch=resnet18 pretrained=true lr=0.001 ...`, for hover labels."""
    return " ".join(f"{h}={format_value(row.get(h))}" for h in hyperparameters)


def _curve_order(trials: pd.DataFrame) -> pd.DataFrame:
    return trials.sort_values(["arch", "init", "trial_id"]).reset_index(drop=True)


def learning_curves(
    epochs: pd.DataFrame,
    trials: pd.DataFrame,
    hyperparameters: list[str],
    baselines: dict[str, float],
) -> go.Figure:
    """Train (left) and val (right) accuracy per epoch, one line per trial and side; buttons
    switch every line to loss or kappa. `baselines` = majority-class share per split, drawn as
    a line for accuracy (kappa's baseline is 0; loss has none). Traces: 2 per trial with
    epochs, then the two baselines."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=("train", "val"))
    colours = arch_colours(trials["arch"])
    by_trial = {t: g for t, g in epochs.groupby("trial_id", sort=False)}
    ys: dict[str, list] = {m: [] for m in CURVE_METRICS}
    seen_groups: set[str] = set()
    for _, trial in _curve_order(trials).iterrows():
        rows = by_trial.get(trial["trial_id"])
        if rows is None:
            continue
        group = f"{trial['arch']} {trial['init']}"
        hover = (
            f"<b>{trial['trial_id']}</b> ({trial['status']})<br>"
            f"{config_text(trial, hyperparameters)}<br>epoch %{{x}}: %{{y:.3f}}"
        )
        for col, side in enumerate(("train", "val"), start=1):
            for m in CURVE_METRICS:
                ys[m].append(_as_list(rows[f"{side}_{m}"]))
            fig.add_trace(
                go.Scatter(
                    x=rows["epoch"].tolist(),
                    y=ys["acc"][-1],
                    mode="lines+markers",
                    name=group,
                    legendgroup=group,
                    showlegend=group not in seen_groups,
                    line={"color": colours[trial["arch"]], "width": 1.5}
                    | {"dash": "dash" if trial["init"] == "scratch" else "solid"},
                    marker={"size": 4},
                    hovertemplate=hover + f"<extra>{side}</extra>",
                ),
                row=1,
                col=col,
            )
            seen_groups.add(group)
    last = int(max(epochs["epoch"].max(), 1))
    for col, split in enumerate(("train", "val"), start=1):
        share = baselines.get(split, math.nan)
        lines = {"acc": [share, share], "kappa": [0.0, 0.0], "loss": [None, None]}
        for m in CURVE_METRICS:
            ys[m].append(lines[m])
        fig.add_trace(
            go.Scatter(
                x=[1, last],
                y=lines["acc"],
                mode="lines",
                name="majority class (predict grade 0)",
                legendgroup="baseline",
                showlegend=col == 1,
                line={"color": "grey", "dash": "dot", "width": 2},
                hovertemplate=f"majority class, {split}: %{{y:.3f}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    buttons = [
        {
            "label": label,
            "method": "update",
            "args": [{"y": ys[m]}, {"yaxis.title.text": label}],
        }
        for m, label in CURVE_METRICS.items()
    ]
    fig.update_layout(
        template=TEMPLATE,
        height=480,
        yaxis_title="accuracy",
        legend={"groupclick": "togglegroup"},
        updatemenus=[
            {"type": "buttons", "direction": "right", "x": 0, "y": 1.18} | {"buttons": buttons}
        ],
        margin={"t": 90},
    )
    fig.update_xaxes(title_text="epoch", dtick=1 if last <= 12 else None, tickformat="d")
    return fig


def _as_list(values: pd.Series) -> list:
    """Floats with NaN as None: plain JSON inside the buttons' arguments (gaps in the line)."""
    return [None if v is None or math.isnan(v) else float(v) for v in values.astype(float)]


def pretrained_vs_scratch(
    trials: pd.DataFrame, metric: str, baselines: dict[str, float]
) -> go.Figure:
    """Per architecture, boxes with every trial's point: best val `metric` (and val accuracy at
    that epoch, beside the majority-class line). One box trace per init and panel."""
    panels = list(dict.fromkeys([f"best_{metric}", "best_val_acc"]))
    titles = [p.removeprefix("best_").replace("_", " ") for p in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles)
    scored = trials[trials[f"best_{metric}"].notna()].sort_values(["arch", "trial_id"])
    colours = {"pretrained": "#1f77b4", "scratch": "#ff7f0e", "unknown": "#7f7f7f"}
    for col, panel in enumerate(panels, start=1):
        for init in ("pretrained", "scratch", "unknown"):
            part = scored[scored["init"] == init]
            if part.empty:
                continue
            fig.add_trace(
                go.Box(
                    x=part["arch"].tolist(),
                    y=part[panel].tolist(),
                    text=part["trial_id"].tolist(),
                    name=init,
                    legendgroup=init,
                    showlegend=col == 1,
                    boxpoints="all",
                    jitter=0.4,
                    pointpos=0,
                    marker={"color": colours[init], "size": 7},
                    hovertemplate="%{text}<br>%{x}: %{y:.3f}<extra>" + init + "</extra>",
                ),
                row=1,
                col=col,
            )
        if panel.endswith("_acc"):
            share = baselines.get("val", math.nan)
            fig.add_hline(
                y=share, line_dash="dot", line_color="grey", row=1, col=col,
                annotation_text=f"majority class {share:.1%}", annotation_position="bottom right",
            )  # fmt: skip
        elif panel.endswith("_kappa"):
            fig.add_hline(y=0.0, line_dash="dot", line_color="grey", row=1, col=col)
    fig.update_layout(template=TEMPLATE, boxmode="group", height=440, yaxis_title="val")
    return fig


def confusion_figure(matrix: np.ndarray, title: str) -> go.Figure:
    """Annotated heatmaps: counts (left) and row-normalised shares (right), per-class recall in
    the right panel's row labels. Rows are the true grade, columns the predicted grade."""
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.full_like(matrix, np.nan), where=totals > 0)
    recall = np.diag(shares)
    grades = [g.split()[0] for g in GRADES]
    recall_labels = [
        f"{g} · recall {'—' if math.isnan(r) else f'{r:.0%}'}"
        for g, r in zip(grades, recall, strict=True)
    ]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("counts", "share of the true grade"),
        horizontal_spacing=0.15,
    )
    fig.add_trace(
        go.Heatmap(
            z=matrix, x=grades, y=grades, text=matrix.astype(int), texttemplate="%{text}",
            colorscale="Blues", showscale=False,
            hovertemplate="true %{y}, predicted %{x}: %{z:.0f}<extra></extra>",
        ),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Heatmap(
            z=shares, x=grades, y=recall_labels, text=np.round(shares * 100, 1),
            texttemplate="%{text}%", colorscale="Blues", zmin=0, zmax=1, showscale=False,
            hovertemplate="true %{y}, predicted %{x}: %{z:.1%}<extra></extra>",
        ),
        row=1, col=2,
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed", title_text="true grade", col=1)
    fig.update_yaxes(autorange="reversed", col=2)
    fig.update_xaxes(title_text="predicted grade", type="category")
    fig.update_layout(template=TEMPLATE, title=title, height=380, margin={"l": 60})
    return fig


def early_stopping_figure(per_trial: pd.DataFrame) -> go.Figure:
    """Stacked bars per trial: epochs run, epochs the scheduler saved, epochs not run because
    the trial failed or is still running. Three traces, one bar each per trial."""
    per = per_trial.sort_values(["epochs_run", "trial_id"]).reset_index(drop=True)
    remaining = (per["planned_epochs"] - per["epochs_run"]).clip(lower=0)
    unfinished = np.where(~per["stopped_early"] & (per["status"] != "TERMINATED"), remaining, 0)
    labels = [
        f"{t} ({s})" if s != "TERMINATED" else t
        for t, s in zip(per["trial_id"], per["status"], strict=True)
    ]
    bars = (
        ("epochs run", per["epochs_run"], "#1f77b4"),
        ("saved by the scheduler", per["saved_epochs"], "#bbd7ee"),
        ("not run (failed / running)", unfinished, "#f4b6b6"),
    )
    fig = go.Figure()
    for name, values, colour in bars:
        fig.add_trace(
            go.Bar(
                x=labels,
                y=np.asarray(values, dtype=int).tolist(),
                name=name,
                marker_color=colour,
                hovertemplate="%{x}: %{y} epochs<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        barmode="stack",
        height=380,
        yaxis_title="epochs",
        xaxis={"type": "category", "tickangle": -45},
    )
    return fig
