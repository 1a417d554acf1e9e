"""Hyperparameter-effect figures as pure functions: a parallel-coordinates plot, the metric
against each hyperparameter, and the importances bar chart.

How a hyperparameter is drawn (`axis_kind`) follows the study's space when it says
(`choice`/`grid` -> category, `loguniform` -> log), else the values: text and booleans are
categories, lr and weight decay log, batch size and epochs categories.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from study.analyze.figures import TEMPLATE, arch_colours, config_text, format_value

LOG_BY_NAME = ("lr", "weight_decay")
CATEGORY_BY_NAME = (
    "arch",
    "pretrained",
    "batch_size",
    "epochs",
    "optimizer",
    "class_weighted",
    "schedule",
    "warmup_epochs",
    "augment",
    "image_size",  # a list of sizes (a cache each), never a range: spaced as categories
)


def axis_kind(name: str, values: pd.Series, space: dict | None = None) -> str:
    """ "category", "log" or "linear" for hyperparameter `name` with these values."""
    spec = (space or {}).get(name)
    if isinstance(spec, dict) and len(spec) == 1:
        (dist,) = spec
        if dist in ("choice", "grid"):
            return "category"
        if dist in ("loguniform", "qloguniform"):
            return "log"
        if dist in ("uniform", "quniform", "randint"):
            return "linear"
    present = values.dropna()
    # by value, not dtype: a column with a missing value is `object` but may hold numbers
    numeric = len(present) > 0 and all(
        isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in present
    )
    if not numeric or name in CATEGORY_BY_NAME:
        return "category"
    if name in LOG_BY_NAME and (present.astype(float) > 0).all():
        return "log"
    return "linear"


def categories(values: pd.Series) -> list:
    """Distinct non-null values in a natural order (numbers by value, text alphabetically)."""
    distinct = list(dict.fromkeys(v for v in values if v is not None and not _isnan(v)))
    try:
        return sorted(distinct)
    except TypeError:  # mixed types: order by their text
        return sorted(distinct, key=str)


def _isnan(value) -> bool:
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _dimension(name: str, values: pd.Series, kind: str) -> dict:
    """One Parcoords dimension; categories become integer codes with their labels as ticks,
    log parameters their log10 with decade ticks (Parcoords has no log axis)."""
    if kind == "category":
        cats = categories(values)
        codes = [cats.index(v) if v in cats else None for v in values]
        labels = [format_value(c) for c in cats]
        return {"label": name, "values": codes, "tickvals": list(range(len(cats)))} | {
            "ticktext": labels,
            "range": [-0.25, max(len(cats) - 1, 0) + 0.25],
        }
    numbers = values.astype(float)
    if kind == "log":
        logs = np.log10(numbers)
        low, high = math.floor(np.nanmin(logs)), math.ceil(np.nanmax(logs))
        ticks = list(range(low, high + 1))
        return {"label": f"{name} (log)", "values": logs.tolist(), "tickvals": ticks} | {
            "ticktext": [f"1e{t}" for t in ticks],
            "range": [low, high],
        }
    return {"label": name, "values": numbers.tolist()}


def parallel_coordinates(
    finished: pd.DataFrame, hyperparameters: list[str], metric: str, space: dict | None = None
) -> go.Figure:
    """All finished trials: one axis per hyperparameter then the metric, coloured by it."""
    score = finished[f"best_{metric}"].astype(float)
    dims = [
        _dimension(h, finished[h], axis_kind(h, finished[h], space))
        for h in hyperparameters
        if finished[h].notna().any()
    ]
    dims.append({"label": metric, "values": score.tolist()})
    fig = go.Figure(
        go.Parcoords(
            line={"color": score.tolist(), "colorscale": "Viridis", "showscale": True}
            | {"colorbar": {"title": {"text": metric}}},
            dimensions=dims,
        )
    )
    fig.update_layout(template=TEMPLATE, height=460, margin={"l": 70, "r": 70, "t": 70})
    return fig


def metric_vs_hyperparameters(
    finished: pd.DataFrame, hyperparameters: list[str], metric: str, space: dict | None = None
) -> go.Figure:
    """One panel per hyperparameter: the metric of every finished trial against its value
    (log x for lr/weight decay, categorical x for arch, pretrained, batch size, ...); points
    coloured by arch. One trace per panel."""
    names = [h for h in hyperparameters if finished[h].notna().any()]
    cols = min(3, max(len(names), 1))
    rows = max(1, math.ceil(len(names) / cols))
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=names, vertical_spacing=0.5 / max(rows, 1) + 0.05
    )
    colours = arch_colours(finished["arch"])
    hover = [config_text(r, hyperparameters) for _, r in finished.iterrows()]
    score = finished[f"best_{metric}"].astype(float).tolist()
    for i, name in enumerate(names):
        row, col = i // cols + 1, i % cols + 1
        kind = axis_kind(name, finished[name], space)
        values = finished[name]
        x = [format_value(v) for v in values] if kind == "category" else values.astype(float)
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=score,
                mode="markers",
                name=name,
                showlegend=False,
                text=[f"{t}<br>{h}" for t, h in zip(finished["trial_id"], hover, strict=True)],
                marker={"color": [colours[a] for a in finished["arch"]], "size": 8}
                | {"line": {"width": 0.5, "color": "white"}},
                hovertemplate="%{text}<br>" + metric + ": %{y:.3f}<extra></extra>",
            ),
            row=row,
            col=col,
        )
        if kind == "category":
            order = [format_value(c) for c in categories(values)]
            fig.update_xaxes(
                type="category", categoryorder="array", categoryarray=order, row=row, col=col
            )
        elif kind == "log":  # decade ticks written 1e-3, as on the parallel coordinates
            fig.update_xaxes(type="log", dtick=1, exponentformat="e", row=row, col=col)
        else:
            fig.update_xaxes(type="linear", row=row, col=col)
    for arch, colour in colours.items():  # a legend for the point colours
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="markers", name=arch, marker={"color": colour})
        )
    fig.update_yaxes(title_text=metric, col=1)
    fig.update_layout(template=TEMPLATE, height=300 * rows + 80, margin={"t": 60})
    return fig


def importance_figure(importances: dict[str, float], method: str) -> go.Figure:
    """Horizontal bars, most important on top; the method in the title."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in items],
            y=[k for k, _ in items],
            orientation="h",
            marker_color="#1f77b4",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        title=f"hyperparameter importance ({method})",
        xaxis_title="importance (sums to 1)",
        height=120 + 40 * len(items),
        margin={"l": 120},
    )
    return fig
