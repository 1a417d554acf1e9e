"""Banners at the top of a report: a study that is still running, pretrained trials skipped.

    python -m study.analyze results/demo --running 8 --reload 30   # what a sweep runs while live

A live report (written by the sweep's background render, study/run/live_report.py) says how many
trials finished and when it was written, and reloads itself in the browser; the final report
the sweep writes at the end has neither. Pure: data in, HTML text out.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass

import pandas as pd

FINISHED = ("TERMINATED", "ERROR")


@dataclass(frozen=True)
class LiveStatus:
    """The report is a snapshot of a running sweep of `total` trials; reload every `reload_s`."""

    total: int
    reload_s: int = 30
    confirm_total: int | None = None  # the confirm stage's runs, told once the search ended


def running_banner(trials: pd.DataFrame, live: LiveStatus, now: dt.datetime) -> str:
    """'running: 5 of 8 trials finished, updated 14:02' plus the script that reloads the page;
    once the confirm stage runs, its runs are counted apart (`total` counts the search's,
    `confirm_total` the confirm stage's)."""
    status = trials["status"] if "status" in trials else pd.Series(pd.NA, index=trials.index)
    no_stage = pd.Series(False, index=trials.index)  # a study from before the confirm stage
    confirm = trials["stage"].eq("confirm") if "stage" in trials else no_stage
    done = int(status[~confirm].isin(FINISHED).sum())
    text = f"running: {done} of {live.total} trials finished"
    if confirm.any() or live.confirm_total:  # its size is known once the search ended
        runs = status[confirm]
        of = f" of {live.confirm_total}" if live.confirm_total else ""
        text += (
            f"; confirm stage: {int(runs.isin(FINISHED).sum())}{of} runs finished, "
            f"{int((~runs.isin(FINISHED)).sum())} running"
        )
    text += f", updated {now:%H:%M}"
    # JS, not <meta refresh>: the page shell's <head> is shared by every report; a reload keeps
    # the scroll position in current browsers.
    reload_ms = max(1, live.reload_s) * 1000
    return (
        f"<p class='warn' id='live-banner'>{html.escape(text)} — this page reloads every "
        f"{live.reload_s} s until the sweep ends.</p>"
        f"<script id='live-reload'>setTimeout(function(){{location.reload()}},{reload_ms});</script>"
    )


def skipped_pretrained_banner(meta: dict) -> str:
    """Empty unless the sweep ran without ImageNet weights (`on_missing_weights: skip`)."""
    archs = meta.get("skipped_pretrained") or []
    if not archs:
        return ""
    names = ", ".join(str(a) for a in archs)
    return (
        f"<p class='warn' id='skipped-pretrained'>Pretrained trials were skipped for {html.escape(names)}: "
        "the ImageNet weights were not on this machine and could not be downloaded "
        "(on_missing_weights: skip), so every trial trained from scratch and nothing here "
        "compares pretrained with scratch. Fetch the weights with <code>make weights</code> "
        "and run the study again.</p>"
    )
