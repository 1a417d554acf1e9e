"""HTML building blocks of the report: the page shell (inline CSS, Plotly's JavaScript once,
a tiny table sorter), sortable tables from dataframes, and the cell formats.

Everything is inline so the file opens from disk with no network; every value from the
results is escaped.
"""

from __future__ import annotations

import html
import math
import numbers

import numpy as np
import pandas as pd

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#fafbfc}
main{max-width:1280px;margin:0 auto;padding:16px 28px 60px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #dde2e8;padding:8px 28px;z-index:9}
nav a{margin-right:14px;color:#2457a6;text-decoration:none}
h1{font-size:24px;margin:18px 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:1px solid #dde2e8}
section{scroll-margin-top:44px}h3{font-size:15px;margin:18px 0 6px}p.note,.note{color:#5a6472}
table{border-collapse:collapse;margin:8px 0 14px;background:#fff;font-size:13px}
th,td{border:1px solid #dde2e8;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#eef2f6;position:sticky;top:0}th.sortable{cursor:pointer}
th.sortable:after{content:" \\21C5";color:#9aa5b1}td.text,th.text{text-align:left}
tr.status-ERROR td{background:#fdecec}tr.status-RUNNING td,tr.status-PENDING td{background:#fff7e0}
tr.baseline td{font-style:italic;background:#f3f4f6}.scroll{overflow:auto;max-height:640px}
.bad{color:#b3261e;font-weight:600}.warn{background:#fff7e0;border:1px solid #f0d58c;padding:6px 10px}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 14px}dl.kv dt{color:#5a6472}
dl.kv dd{margin:0;font-family:ui-monospace,monospace;white-space:pre-wrap}
"""

# Click a header to sort by it; a second click reverses. Cells sort by data-v (numbers first).
SORTER_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){th.classList.add('sortable');
  th.addEventListener('click',function(){var b=t.tBodies[0],asc=th.dataset.dir!=='asc';
   t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});th.dataset.dir=asc?'asc':'desc';
   var key=function(r){var c=r.cells[i],v=c.dataset.v;return v===undefined?c.textContent:v};
   Array.from(b.rows).sort(function(x,y){var a=key(x),c=key(y),na=a===''||isNaN(a),nc=c===''||isNaN(c);
    if(na!==nc)return na?1:-1;var d=na?a.localeCompare(c):a-c;return asc?d:-d})
   .forEach(function(r){b.appendChild(r)});});});});
"""

PERCENT_SUFFIXES = ("_acc", "_sensitivity", "_specificity", "share", "_vs_majority")


def is_missing(value) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(value)


def format_cell(column: str, value) -> str:
    """Text shown for `value` in `column`: shares as %, kappa/loss 3 decimals, '—' if missing."""
    if is_missing(value):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Real):
        if column.endswith("_vs_majority"):
            return f"{value * 100:+.1f} pp"
        if column.endswith(PERCENT_SUFFIXES):
            return f"{value * 100:.1f} %"
        if column.endswith(("_kappa", "_loss", "_kappa_1view")):
            return f"{value:.3f}"
        if column in ("rank", "epochs_run", "best_epoch", "trials") or float(value).is_integer():
            return f"{int(value)}" if abs(value) < 1e15 else f"{value:g}"
        if column == "seconds":
            return f"{value:.0f}"
        return f"{value:.3g}"
    return str(value)


def sort_key(value) -> str:
    """data-v: numbers sort by value, missing values last, text as itself."""
    if is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def html_table(
    df: pd.DataFrame,
    labels: dict[str, str] | None = None,
    *,
    sortable: bool = True,
    row_classes: list[str] | None = None,
    css_id: str | None = None,
) -> str:
    """A table with one header per column (labelled via `labels`), cells escaped."""
    labels = labels or {}
    text_cols = {c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])}
    head = "".join(
        f'<th class="{"text" if c in text_cols else ""}" data-col="{html.escape(str(c))}">'
        f"{html.escape(labels.get(c, str(c)))}</th>"
        for c in df.columns
    )
    body = []
    for i, row in enumerate(df.itertuples(index=False, name=None)):
        cls = f' class="{html.escape(row_classes[i])}"' if row_classes else ""
        cells = "".join(
            f'<td class="{"text" if c in text_cols else ""}" data-v="{html.escape(sort_key(v))}">'
            f"{html.escape(format_cell(str(c), v))}</td>"
            for c, v in zip(df.columns, row, strict=True)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    attrs = (' class="sortable"' if sortable else "") + (f' id="{css_id}"' if css_id else "")
    return (
        f'<div class="scroll"><table{attrs}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def key_values(items: dict[str, object]) -> str:
    """A definition list of `label: value` (values escaped, dicts shown compactly)."""
    rows = "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(compact(v))}</dd>"
        for k, v in items.items()
    )
    return f'<dl class="kv">{rows}</dl>'


def compact(value) -> str:
    """Dicts and lists as `key: value, ...` and `[a, b]`, missing values as '—'."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {compact(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(compact(v) for v in value) + "]"
    return "—" if is_missing(value) else str(value)


def page(title: str, nav: list[tuple[str, str]], body: str, plotlyjs: str | None) -> str:
    """The whole document. `plotlyjs` (the library's source) is inlined once, before every
    figure's script; None for pages without figures (the index)."""
    links = "".join(f'<a href="#{html.escape(a)}">{html.escape(t)}</a>' for a, t in nav)
    library = f'<script type="text/javascript">{plotlyjs}</script>' if plotlyjs else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"{library}{f'<nav>{links}</nav>' if links else ''}<main>{body}</main>"
        f"<script>{SORTER_JS}</script></body></html>\n"
    )
