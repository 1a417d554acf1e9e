"""Turn a study's Parquet results into one offline, interactive HTML report.

    python -m study.analyze results/demo            # writes results/demo/report.html
    python -m study.analyze results/                # every study in it + results/index.html
    python -m study.analyze results/demo --out /tmp/demo.html --top 5 --open
    python -m study.analyze results/demo --resamples 2000   # a quicker, coarser bootstrap
    python -m study.analyze results/demo --running 8 --nice 19   # a live render by hand, at low priority
    python -m study.analyze results/demo --running 8 --serve     # renders on request (stdin)

Reads only study.json and the Parquet files (no Ray, no torch), so it works on a copied
results folder and on a study that is still running. Writes summary.json (the comparison's
numbers, docs/results.md) beside report.html — with --out, `<out>.summary.json` beside it —
and prints the path of each report written. With --serve it stays up for a running sweep
(study/run/live_report.py): each line on stdin asks for one render, each answer is one JSON line
on stdout, so the imports (~2 CPU-s, more than a render) are paid once per sweep, not per render;
the request {"final": true} writes the finished study's report (no banner, no reload).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import webbrowser
from pathlib import Path

from retina.cli import run_command
from retina.errors import RetinaError
from study.analyze.banners import LiveStatus
from study.analyze.load import find_studies, load_study, read_predictions
from study.analyze.report import build_index, build_report, write_atomic
from study.analyze.summary import build_summary, summary_text
from study.record.layout import REPORT_FILE, SUMMARY_FILE


def _whole(flag: str, least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < least:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a whole number >= {least}, not {text!r}"
            )
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m study.analyze",
        description="Write report.html for a study folder, or for each study in a folder.",
    )
    parser.add_argument("path", help="a study folder (holds study.json) or a folder of studies")
    parser.add_argument("--out", type=Path, help="report file for a single study")
    parser.add_argument(
        "--top",
        type=_whole("--top", 1),
        default=3,
        metavar="K",
        help="confusion matrices of the best K",
    )
    parser.add_argument(
        "--resamples", type=_whole("--resamples", 100), default=10_000, metavar="B",
        help="patient bootstrap resamples of the comparison (default 10000)",
    )  # fmt: skip
    parser.add_argument("--open", action="store_true", help="open the report in a web browser")
    parser.add_argument(
        "--running",
        type=_whole("--running", 1),
        metavar="TOTAL",
        help="the study is still running TOTAL trials: a banner, and the page reloads itself",
    )
    parser.add_argument(
        "--reload",
        type=_whole("--reload", 1),
        default=30,
        metavar="S",
        help="with --running: reload every S s",
    )
    parser.add_argument(
        "--nice", type=int, default=0, metavar="N", help="lower this process's priority (os.nice)"
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="with --running: render once per line read on stdin, answer each with a JSON line",
    )
    return parser.parse_args(argv)


def analyze_study(
    folder: Path,
    out: Path | None = None,
    top_k: int = 3,
    resamples: int = 10_000,
    live: LiveStatus | None = None,
) -> Path:
    """Load, build and atomically write one study's summary.json and report; returns the
    report's path. `live`: a running sweep's snapshot (banner, reload)."""
    study = load_study(folder)
    target = out if out is not None else folder / REPORT_FILE
    summary = build_summary(study, read_predictions(folder), resamples)
    write_atomic(target.with_name(f"{target.stem}.summary.json") if out else folder / SUMMARY_FILE,
                 summary_text(summary))  # fmt: skip
    write_atomic(target, build_report(study, top_k, summary, live))
    return target


def serve(render, requests, replies) -> None:
    """Answer each request line (a JSON object: what the sweep knows now, e.g. {"confirm_total":
    4}) with one JSON line {"ok", "error", "cpu_s"}, until stdin ends; `render(request)`.

    `cpu_s` is this process's CPU time so far (imports included): the sweep holds the renders
    to a share of the machine by it. A failed render is answered, not fatal: the next retries."""
    while line := requests.readline():
        reply: dict[str, object] = {"ok": True}
        try:
            render(json.loads(line))
        except Exception as exc:  # e.g. a file replaced mid-read, a full disk: said, retried
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply["cpu_s"] = round(sum(os.times()[:2]), 3)  # user + system, of this process
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def _analyze_folder(root: Path, studies: list[Path], top_k: int, resamples: int) -> Path:
    """Each study gets its report (a broken one is skipped with its reason); then the index."""
    entries: list[tuple[str, Path | None, str]] = []
    for folder in studies:
        try:
            report = analyze_study(folder, None, top_k, resamples)
        except RetinaError as exc:
            print(f"skipped {folder}: {exc}", file=sys.stderr)
            entries.append((folder.name, None, f"no report: {exc}"))
            continue
        print(report)
        entries.append((folder.name, report, ""))
    if not any(report for _, report, _ in entries):
        raise RetinaError(f"no report written for the {len(studies)} studies in {root} (see above)")
    index = root / "index.html"
    write_atomic(index, build_index(entries, root))
    return index


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nice:  # a live render shares the machine with the trials: it gets the idle CPU
        os.nice(args.nice)
    root = Path(args.path).expanduser()
    studies = find_studies(root)
    single = studies == [root] or (root.is_file() and len(studies) == 1)
    live = LiveStatus(args.running, args.reload) if args.running else None
    if args.serve:
        if live is None or not single or args.out is not None:
            raise RetinaError("--serve renders one running study: give its folder and --running")
        replies, sys.stdout = sys.stdout, sys.stderr  # a library's print must not break a reply
        # Ctrl-C in the sweep's terminal reaches this process too: the sweep ends it (closes
        # its input) once a render in flight is written, rather than it dying mid-render.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        def render(request: dict) -> None:
            now = dataclasses.replace(live, confirm_total=request.get("confirm_total"))
            # {"final": true}: the sweep ended; the report as `analyze` writes it
            final = request.get("final", False)
            analyze_study(studies[0], None, args.top, args.resamples, None if final else now)

        serve(render, sys.stdin, replies)
        return 0
    if single:
        written = analyze_study(studies[0], args.out, args.top, args.resamples, live)
    else:
        if live is not None:
            raise RetinaError(f"--running describes one study; give its folder, not {root}")
        if args.out is not None:
            raise RetinaError(
                f"--out writes one study's report, but {root} holds {len(studies)} studies; "
                "drop --out (each report goes into its study folder) or give one study folder"
            )
        written = _analyze_folder(root, studies, args.top, args.resamples)
    print(written)
    if args.open:
        webbrowser.open(written.resolve().as_uri())
    return 0


if __name__ == "__main__":
    run_command(main)
