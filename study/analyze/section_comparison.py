"""The report's comparison section, from summary.json's dict: cells with mean +- sd over
seeds and 95% patient-bootstrap intervals, pairs with their difference, raw and Holm-adjusted
p-values and decisions, P(A>B) with its interval and verdict, and sentence,
the tuning curves and the optimism line. Pure: dict in, HTML (and a figure) out.

    html = comparison_section(build_summary(study, predictions), figure_to_html)
"""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from study.analyze.comparison import METRIC_WORDS, p_text
from study.analyze.inference import MIN_RUNS_FOR_P
from study.analyze.markup import html_table

HOW_TO_READ = f"""<p class='note'><b>How to read this.</b> One training run per configuration
cannot tell a better configuration from a lucky seed. So the best configuration of each cell
(e.g. resnet18 × pretrained) is trained again with new seeds and each run is tested once. A
cell shows the mean ± sd of its runs on test and a 95% interval for the mean that allows for
both other seeds and other test patients (patients are resampled with both eyes; the
seed-to-seed variance is pooled over all cells, net of test-sample noise). A pair of cells
that differ in one setting shows the difference of the means with its 95% interval and its
p-value, raw and Holm-adjusted over all the study's pairs (testing many pairs makes some look
different by chance; the adjustment keeps the chance of any false call at 5%). The sentence
names a winner only when the adjusted decision does; otherwise no difference is detectable —
which means these runs cannot tell, not that the cells are equal. P(A&gt;B) is the chance that
a new run of A beats a new run of B on a test split like this one (0.5: a coin flip), from the
same model as the intervals; Bouthillier et al. 2021 call ≥ 0.75 a meaningful gain, and a gain
is called meaningful here only when P's whole 95% interval is at or beyond 0.75 (with fewer
than {MIN_RUNS_FOR_P} runs in a cell: too few runs to tell). An undecided pair's sentence ends
with how many seeds per cell would narrow its interval to the observed difference (never below
the study's confirm.margin), or, when the test set's own noise is wider than that, how many
test patients would; `python -m study.sweep SPACE --more-seeds K` adds seeds to a finished
study.</p>"""
VERDICT_WORDS = {
    "meaningful_a": "meaningful gain for A",
    "meaningful_b": "meaningful gain for B",
    "not_meaningful": "no meaningful gain",
    "undecided": "cannot tell yet",
    "too_few_runs": "too few runs to tell",
}


def _num(value) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def _interval(lo, hi) -> str:
    return f"[{_num(lo)}, {_num(hi)}]"


def _when(at: str | None) -> str:
    return at.replace("T", " ")[:16] + " UTC" if at else "—"  # ISO seconds, UTC, from study.json


def seeds_text(seeds: list, batches: list[dict]) -> str:
    """'1000, 1001, 1002 (with the study, 2026-12-08 03:10 UTC); 1003, 1004 (added 2026-12-08
    03:40 UTC)': a cell's seeds by the batch that added them (summary.json confirm.batches)."""
    parts, left = [], [s for s in seeds if s is not None]
    for i, batch in enumerate(batches):
        mine = [s for s in left if s in batch["seeds"]]
        left = [s for s in left if s not in batch["seeds"]]
        if mine:
            how = "with the study" if i == 0 and batch.get("cells") is None else "added"
            parts.append(f"{', '.join(map(str, mine))} ({how}, {_when(batch.get('at'))})")
    if left:
        parts.append(", ".join(map(str, left)))
    return "; ".join(parts) or "—"


def cell_table(cells: list[dict], metrics: list[str], batches=()) -> pd.DataFrame:
    rows = []
    for c in cells:
        row = {"cell": c["cell"], "runs": str(c["n_runs"])}
        row["seeds (when added)"] = seeds_text(c["seeds"], list(batches))
        for m in metrics:
            s = c["metrics"][m]
            spread = f" ± {_num(s['sd'])}" if c["n_runs"] > 1 else " (one run)"
            row[f"test {METRIC_WORDS[m]}"] = _num(s["mean"]) + spread
            row[f"{METRIC_WORDS[m]} 95% CI"] = _interval(s["ci_low"], s["ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def decision(stats: dict) -> str:
    """The pair's decision in the sentence's words: 'A better', 'B better' or 'no difference
    detectable' (and what the raw p said when Holm's adjustment does not uphold it)."""
    side = "A better" if stats["difference"] > 0 else "B better"
    if stats["different_adjusted"]:
        return side
    if stats["different"]:
        return f"no difference detectable after Holm ({side} before adjusting)"
    return "no difference detectable"


def pair_table(pairs: list[dict], metrics: list[str]) -> pd.DataFrame:
    rows = []
    for p in pairs:
        row = {"A − B": f"{p['a']} − {p['b']}", "differs in": p["dimension"]}
        for m in metrics:
            s = p["metrics"][m]
            row[f"Δ {METRIC_WORDS[m]} [95% CI]"] = f"{s['difference']:+.3f} " + _interval(
                s["ci_low"], s["ci_high"]
            )
            row[f"p {METRIC_WORDS[m]}: decision"] = (
                f"{s['p_value']:.3f} (Holm {s['p_value_adjusted']:.3f}): {decision(s)}"
            )
            row[f"P(A>B) {METRIC_WORDS[m]}"] = p_text(s) + ": " + VERDICT_WORDS[s["p_verdict"]]
        rows.append(row)
    return pd.DataFrame(rows)


def tuning_figure(tuning: dict) -> go.Figure:
    """Expected best val metric vs trials: the study (with the median curve's band), each cell."""
    word = tuning["metric"].removeprefix("best_").replace("_", " ")
    study = tuning["study"]
    fig = go.Figure()
    if "band_low" in study:
        fig.add_trace(
            go.Scatter(
                x=study["n"],
                y=study["band_high"],
                mode="lines",
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(go.Scatter(
            x=study["n"], y=study["band_low"], mode="lines", line={"width": 0}, fill="tonexty",
            fillcolor="rgba(36,87,166,0.15)", name=f"median best, {tuning['band']:.0%} band",
        ))  # fmt: skip
    fig.add_trace(go.Scatter(x=study["n"], y=study["expected_best"], mode="lines+markers",
                             name="expected best, all search trials",
                             line={"color": "#2457a6", "width": 3}))  # fmt: skip
    palette = qualitative.Plotly
    for i, (label, curve) in enumerate(tuning["cells"].items()):
        fig.add_trace(go.Scatter(x=curve["n"], y=curve["expected_best"], mode="lines",
                                 name=label, line={"dash": "dash",
                                                   "color": palette[(i + 1) % len(palette)]}))  # fmt: skip
    fig.update_layout(
        template="plotly_white", height=420, title="Tuning curve: best " + word + " after n trials",
        xaxis_title="search trials (n)", yaxis_title=f"expected best {word}",
        legend={"orientation": "h", "y": -0.25},
    )  # fmt: skip
    return fig


def _seed_context(summary: dict) -> str:
    """This study's own seed sd (net of test noise) from its confirm runs, or nothing."""
    primary = summary["primary_metric"]
    pooled = (summary.get("seed_variance") or {}).get(primary) or {}
    if not pooled.get("dof"):
        return ""
    word = METRIC_WORDS[primary]
    return (
        f"<p class='note'>Context: in this study's confirm runs, one configuration's test {word} "
        f"varies between training seeds by sd {_num(pooled['pooled_sd'])} (net of test-sample "
        f"noise; pooled over the cells, {pooled['dof']} degrees of freedom), while the test "
        f"sample alone moves one run by sd {_num(pooled['unshared_test_noise_sd'])} beyond what "
        "the runs share. The intervals draw the seed variance from this pooled estimate.</p>"
    )


def comparison_section(summary: dict, figure_html: Callable[[go.Figure], str]) -> str:
    """The section's HTML; `figure_html` turns a figure into its div (the report numbers them)."""
    metrics = ["kappa", "acc", "balanced_acc"]
    primary = summary["primary_metric"]
    metrics.sort(key=lambda m: m != primary)
    confirm, boot = summary["confirm"], summary["bootstrap"]
    out = [HOW_TO_READ]
    if confirm["status"] != "ok":
        out.append(f"<p class='warn'>{html.escape(confirm['note'])}</p>")
    if summary["cells"]:
        out.append(
            f"<h3>Cells</h3><p class='note'>Test split: {boot['test_images']} images of "
            f"{boot['test_patients']} patients; {boot['resamples']} patient resamples "
            f"(seed {boot['seed']}). Compared: {html.escape(', '.join(confirm['compare']))}.</p>"
        )
        batches = confirm.get("batches") or []
        out.append(html_table(cell_table(summary["cells"], metrics, batches), sortable=False))
    if summary["pairs"]:
        out.append("<h3>Pairs</h3>")
        out.append(html_table(pair_table(summary["pairs"], metrics), sortable=False))
        items = "".join(f"<li>{html.escape(p['sentence'])}</li>" for p in summary["pairs"])
        out.append(f"<ul class='verdicts'>{items}</ul>")
    out.append(_seed_context(summary))
    tuning = summary["tuning"]
    out.append("<h3>Tuning curve</h3>")
    if tuning["study"] is not None:
        out.append(figure_html(tuning_figure(tuning)))
    out.append(f"<p>{html.escape(tuning['sentence'])}</p>")
    per_cell = [
        f"{label}: {len(c['n'])} trials, within {tuning['close']} of its best by "
        f"{c['needed_trials']}, last doubling +{c['gain_last_doubling']:.3f}"
        for label, c in tuning["cells"].items()
    ]
    if per_cell:
        out.append(
            "<ul class='note'>" + "".join(f"<li>{html.escape(t)}</li>" for t in per_cell) + "</ul>"
        )
    out.append(f"<h3>Optimism</h3><p>{html.escape(summary['optimism']['sentence'])}</p>")
    return "".join(out)
