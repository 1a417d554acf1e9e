"""The report in a real headless Chromium: no JavaScript error, every figure drawn, nothing
requested from the network.

How: Chromium runs with `--remote-debugging-pipe` and this file speaks the DevTools protocol
over that pipe (JSON messages ended by NUL, on fds 3 and 4) — no extra Python package. The page
session reports every request (`Network.requestWillBeSent`), every uncaught exception
(`Runtime.exceptionThrown`) and console/log errors; `Runtime.evaluate` then counts the plot
divs that hold Plotly's `.main-svg`. DNS is mapped to nothing (`--host-resolver-rules`), so a
stray request could not leave the machine either. A control page with a remote image and a
thrown error proves the checks can fail. Chromium comes from `bash .ci/install-chromium.sh`.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from study.analyze.load import load_study
from study.analyze.report import build_report, write_atomic
from tests.helpers.analyze_fixtures import make_results
from tests.helpers.confirm_fixtures import add_confirm

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: run `bash .ci/install-chromium.sh`"
)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio", '--host-resolver-rules=MAP * ~NOTFOUND',
    "--remote-debugging-pipe",
]  # fmt: skip
DRAWN_JS = """(() => { const divs = [...document.querySelectorAll('.plotly-graph-div')];
  return {total: divs.length, drawn: divs.filter(d => d.querySelector('.main-svg')).length}; })()"""


class Browser:
    """Just enough of the DevTools protocol over a pipe to load a page and watch it."""

    def __init__(self, user_data_dir: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():  # Chromium reads commands on fd 3 and writes replies on fd 4
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # above 4: no clobbering
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=child_fds,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self.events: list[dict] = []
        self._replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.session: str | None = None

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_chrome, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                (self._replies.put(msg) if "id" in msg else self.events.append(msg))

    def send(self, method: str, params: dict | None = None, timeout: float = 20.0) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._replies.get(timeout=max(deadline - time.monotonic(), 0.01))
            if reply["id"] == self._next_id:
                assert "error" not in reply, reply
                return reply.get("result", {})

    def open(self, url: str) -> None:
        """Attach to the page, turn on the event domains, navigate, wait for `load`."""
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        attached = self.send(
            "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}
        )
        self.session = attached["sessionId"]
        for domain in ("Runtime", "Network", "Page", "Log"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_for(lambda: any(e.get("method") == "Page.loadEventFired" for e in self.events))

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, condition, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting for the page"
            time.sleep(0.1)

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self._events("Network.requestWillBeSent")]

    def errors(self) -> list[str]:
        found = [
            e["params"]["exceptionDetails"].get("exception", {}).get("description")
            or e["params"]["exceptionDetails"]["text"]
            for e in self._events("Runtime.exceptionThrown")
        ]
        found += [
            " ".join(str(a.get("value", a.get("description"))) for a in e["params"]["args"])
            for e in self._events("Runtime.consoleAPICalled")
            if e["params"]["type"] in ("error", "assert")
        ]
        found += [
            e["params"]["entry"]["text"]
            for e in self._events("Log.entryAdded")
            if e["params"]["entry"]["level"] == "error"
        ]
        return found

    def _events(self, method: str) -> list[dict]:
        return [e for e in self.events if e.get("method") == method]

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", timeout=5)
        except (AssertionError, queue.Empty, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)


@pytest.fixture()
def browser(tmp_path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


def _external(urls: list[str], page: str) -> list[str]:
    return [u for u in urls if u != page and not u.startswith(("data:", "blob:", "about:"))]


IMAGES_JS = """(() => { const imgs = [...document.querySelectorAll('#gallery img')];
  return {total: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
          inline: imgs.filter(i => i.src.startsWith('data:image/jpeg;base64,')).length}; })()"""


def add_gallery(study: Path, cases: int = 3) -> None:
    """A gallery/ folder as the sweep writes it: real JPEGs and index.parquet."""
    folder = study / "gallery"
    folder.mkdir()
    rows = []
    for k in range(cases):
        for name, value in ((f"g{k}-error-01.jpg", 60), (f"g{k}-error-01-cam.jpg", 200)):
            pixels = np.full((24, 24, 3), value, np.uint8)
            Image.fromarray(pixels).save(folder / name, format="JPEG")
        rows.append({"image": f"{k}_left", "patient": str(k), "split": "test", "true": k,
                     "predicted": 4 - k, "probability": 0.8, "kind": "error",
                     "file": f"g{k}-error-01.jpg", "cam_file": f"g{k}-error-01-cam.jpg",
                     "trial_id": "t01", "epoch": 3})  # fmt: skip
    pd.DataFrame(rows).to_parquet(folder / "index.parquet")


def test_report_draws_every_figure_offline_without_errors(tmp_path, browser):
    report = tmp_path / "report.html"
    study = make_results(tmp_path)
    add_gallery(study)
    write_atomic(report, build_report(load_study(study), top_k=3))
    url = report.as_uri()
    browser.open(url)
    counts: dict = {}

    def all_drawn() -> bool:
        counts.update(browser.evaluate(DRAWN_JS))
        return counts["drawn"] == counts["total"]

    browser.wait_for(all_drawn)
    assert counts == {"total": 12, "drawn": 12}
    # the gallery's thumbnails are inline data URIs that decode in the page
    assert browser.evaluate(IMAGES_JS) == {"total": 6, "loaded": 6, "inline": 6}
    # the learning curves' "loss" button and the table sorter work in the real page
    switched = browser.evaluate(
        """(async () => { const gd = [...document.querySelectorAll('.plotly-graph-div')]
             .find(d => (d.layout.updatemenus || []).length);
           await Plotly.update(gd, ...gd.layout.updatemenus[0].buttons[1].args);
           return [gd.layout.yaxis.title.text, gd.data[0].y[0]]; })()"""
    )
    assert switched[0] == "loss" and abs(switched[1] - (2 * (1 - 0.77) + 0.1)) < 1e-9
    order = browser.evaluate(
        """(() => { const t = document.querySelector('#leaderboard table.sortable');
           const th = [...t.querySelectorAll('th')].find(h => h.dataset.col === 'trial_id');
           th.click(); th.click();
           return [...t.tBodies[0].rows].map(r => r.cells[1].textContent); })()"""
    )
    assert order == ["t05", "t04", "t03", "t02", "t01", "t00"]
    assert browser.errors() == []
    assert browser.requests()[0] == url
    assert _external(browser.requests(), url) == []  # Plotly's own data: URLs are not fetches


def test_the_comparison_section_of_a_study_with_a_confirm_stage(tmp_path, browser):
    truth = {("resnet18", True): 0.85, ("resnet18", False): 0.5, ("resnet50", True): 0.8}
    # 3 seeds: at 2 the pooled seed variance (1 dof per cell) rightly calls no difference.
    folder = add_confirm(make_results(tmp_path), truth, seeds=3, n_patients=60)
    report = tmp_path / "confirm.html"
    write_atomic(report, build_report(load_study(folder), top_k=1))
    browser.open(report.as_uri())
    browser.wait_for(lambda: (c := browser.evaluate(DRAWN_JS))["drawn"] == c["total"])
    shown = browser.evaluate(
        """(() => { const s = document.querySelector('#comparison');
           return {tables: [...s.querySelectorAll('table')].map(t => t.tBodies[0].rows.length),
                   verdicts: [...s.querySelectorAll('ul.verdicts li')].map(li => li.textContent),
                   tuning: s.querySelectorAll('.plotly-graph-div .main-svg').length > 0}; })()"""
    )
    # 3 cells; pairs: pretrained vs scratch for resnet18, resnet18 vs resnet50 pretrained
    assert shown["tables"] == [3, 2] and shown["tuning"]
    assert shown["verdicts"][0].startswith("pretrained beats scratch for resnet18 by ")
    assert browser.errors() == []


def test_the_checks_catch_errors_and_network_requests(tmp_path, browser):
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><div class="plotly-graph-div"></div>'
        '<img src="http://example.invalid/pixel.png">'
        '<script>throw new Error("boom")</script></body></html>'
    )
    browser.open(page.as_uri())
    browser.wait_for(lambda: browser.errors() and _external(browser.requests(), page.as_uri()))
    assert any("boom" in e for e in browser.errors())
    assert _external(browser.requests(), page.as_uri()) == ["http://example.invalid/pixel.png"]
    assert browser.evaluate(DRAWN_JS) == {"total": 1, "drawn": 0}
