"""A generated family of broken datasets through the real CLI, `python -m retina.train`.

    .venv/bin/pytest tests/test_reliability_data.py

Every dataset is a copy of one small synthetic set (16-32 px) with one kind of damage. Each
run must end with its clear message (exit 2, one `error:` block, no traceback), or succeed
where the damage is harmless, or, with `--skip-bad`, record the skipped files; a time limit
on every run turns a hang into a failure. Unit-level checks of the same problems live in
test_manifest.py, test_images.py and test_cache.py; this file is the user's view.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina.images import MAX_PIXELS
from retina.synthetic import generate
from tests.helpers.cli import ROOT

CSV = "trainLabels.csv"
TIMEOUT = 180  # far above a run's few seconds: reaching it means a hang
# A dozen CLI runs (about a minute on 2 cores) share one module fixture: make test runs a
# module in one pytest-xdist worker (--dist loadfile), so it is made once.
pytestmark = pytest.mark.slow


@dataclass
class Run:
    returncode: int
    out: str
    err: str
    cache: Path


# ---- the damage --------------------------------------------------------------------------
def jpeg_bytes(size=(24, 24), mode="RGB", colour=(120, 40, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header claims `width` x `height` (a decompression bomb)."""
    data = bytearray(jpeg_bytes())
    sof = data.index(b"\xff\xc0")  # baseline frame: length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def rows(folder: Path) -> list[str]:
    return (folder / CSV).read_text().splitlines()


def image(folder: Path, line: int) -> Path:
    """The image file of CSV line `line` (1 = the first data row)."""
    return folder / "train" / f"{rows(folder)[line].split(',')[0]}.jpeg"


def bad_images(d: Path) -> None:
    data = image(d, 1).read_bytes()
    image(d, 1).write_bytes(data[: len(data) // 2])  # truncated JPEG
    image(d, 2).write_bytes(b"")  # zero bytes
    image(d, 3).write_text("this is not an image\n")  # text under .jpeg
    image(d, 4).write_bytes(jpeg_claiming(10_000, 9_000))  # 90 megapixels in the header
    image(d, 5).write_bytes(jpeg_claiming(60_000, 60_000))  # 3.6 gigapixels: PIL's own guard


def odd_but_usable_images(d: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (90, 50, 20)).save(buf, format="PNG")
    image(d, 1).write_bytes(buf.getvalue())  # a PNG under a .jpeg name
    image(d, 2).write_bytes(jpeg_bytes((1, 1)))  # 1x1
    image(d, 3).write_bytes(jpeg_bytes(mode="CMYK", colour=(10, 120, 200, 30)))  # CMYK
    grey16 = np.full((24, 24), 40000, dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey16).save(buf, format="PNG")
    image(d, 4).write_bytes(buf.getvalue())  # 16-bit grey


def bad_rows(d: Path) -> None:
    lines = rows(d)
    name = lambda i: lines[i].split(",")[0]  # noqa: E731
    lines[1] = f"{name(1)},mild"  # a label as text
    lines[2] = f"{name(2)},2.5"  # a label as a non-integer float
    lines[3] = f"{name(3)}"  # a row missing its label field
    lines[4] = "../../etc/passwd,1"  # a name leaving the folder
    lines[5] = "/etc/hostname,1"  # an absolute path
    lines[6] = "no_such_eye,0"  # a row whose image is missing
    lines.append(lines[7])  # a duplicated row
    (d / CSV).write_text("\n".join(lines) + "\n")


def float_labels(d: Path) -> None:
    lines = rows(d)
    (d / CSV).write_text("\n".join([lines[0]] + [f"{x}.0" for x in lines[1:]]) + "\n")


def symlink_out(d: Path) -> None:
    outside = d.parent / f"{d.name}-outside.jpeg"
    outside.write_bytes(jpeg_bytes())
    target = image(d, 1)
    target.unlink()
    target.symlink_to(outside)  # the name is plain; the file it reaches is not in the folder


def bom_and_crlf(d: Path) -> None:
    (d / CSV).write_bytes(codecs.BOM_UTF8 + "\r\n".join(rows(d)).encode() + b"\r\n")


def latin1(d: Path) -> None:
    lines = rows(d)
    lines[0] += ",remarque"
    lines[1:] = [line + ",vérifié" for line in lines[1:]]
    (d / CSV).write_bytes("\n".join(lines).encode("latin-1") + b"\n")  # not UTF-8


def utf16_without_bom(d: Path) -> None:
    (d / CSV).write_bytes("\n".join(rows(d)).encode("utf-16-le"))


def utf16_with_bom(d: Path) -> None:
    (d / CSV).write_bytes("\n".join(rows(d)).encode("utf-16"))  # Excel's "Unicode text"


def header_only(d: Path) -> None:
    (d / CSV).write_text("image,level\n")


def binary_csv(d: Path) -> None:
    (d / CSV).write_bytes(bytes(range(256)) * 4)


DAMAGE = {
    "bad_images": bad_images, "odd_images": odd_but_usable_images, "bad_rows": bad_rows,
    "float_labels": float_labels, "symlink_out": symlink_out, "bom_crlf": bom_and_crlf,
    "latin1": latin1, "utf16_no_bom": utf16_without_bom, "utf16_bom": utf16_with_bom,
    "header_only": header_only, "binary_csv": binary_csv,
}  # fmt: skip
RUNS = [(name, False) for name in DAMAGE] + [("bad_images", True)]


# ---- one build, every run ----------------------------------------------------------------
def train(data: Path, cache: Path, skip_bad: bool) -> Run:
    args = ["--data", str(data), "--arch", "resnet18", "--pretrained", "false", "--epochs", "1",
            "--image-size", "16", "--batch-size", "32", "--device", "cpu",
            "--cache-dir", str(cache)] + (["--skip-bad"] if skip_bad else [])  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "retina.train", *args], cwd=ROOT, capture_output=True,
            text=True, timeout=TIMEOUT, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m retina.train hung on {data.name} (> {TIMEOUT} s)")
    return Run(proc.returncode, proc.stdout, proc.stderr, cache)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, bool], Run]:
    """Every damaged dataset, built once from one synthetic set, run through the CLI."""
    base = tmp_path_factory.mktemp("broken")
    clean = generate(base / "clean", n=80, size=32, seed=3)
    jobs = {}
    for name, skip in RUNS:
        folder = base / name
        if not folder.exists():
            shutil.copytree(clean, folder)
            DAMAGE[name](folder)
        jobs[(name, skip)] = (folder, base / f"cache-{name}-{skip}", skip)
    with ThreadPoolExecutor(max_workers=2) as pool:  # two CLIs at a time: 2 cores
        futures = {key: pool.submit(train, *job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def refused(run: Run) -> str:
    """Exit 2 with an `error:` message and no traceback; returns the message."""
    assert run.returncode == 2, run.out[-2000:] + run.err[-2000:]
    assert "Traceback" not in run.err + run.out
    assert run.err.startswith("error: ") or "\nerror: " in run.err, run.err[-2000:]
    return run.err[run.err.index("error: ") :]


def trained(run: Run) -> None:
    assert run.returncode == 0, run.out[-2000:] + run.err[-2000:]
    assert "Traceback" not in run.err
    assert "epoch 1/1" in run.out


# ---- the checks --------------------------------------------------------------------------
def test_bad_images_are_listed_together_each_with_its_reason(runs):
    message = refused(runs[("bad_images", False)])
    assert message.startswith("error: 5 of 80 images cannot be used")
    assert "truncated or corrupt JPEG" in message
    assert "empty file (0 bytes)" in message
    assert "not an image" in message
    limit = f"{MAX_PIXELS / 1e6:.0f}"
    assert (
        f"image too large: 10000x9000 = 90 megapixels, over the {limit}-megapixel limit" in message
    )
    assert "image too large: Image size (3600000000 pixels)" in message  # refused unopened
    assert f"our limit is {limit} megapixels" in message
    assert "--skip-bad" in message  # and the way out


def test_skip_bad_trains_without_them_and_records_each_skip(runs):
    run = runs[("bad_images", True)]
    trained(run)
    assert "skipped 5 of 80 images that cannot be used (--skip-bad)" in run.err
    metas = list(run.cache.glob("*/meta.json"))
    assert len(metas) == 1
    skipped = json.loads(metas[0].read_text())["skipped"]
    assert len(skipped) == 5
    reasons = " | ".join(s["reason"] for s in skipped)
    for reason in ("truncated", "empty file", "not an image", "too large"):
        assert reason in reasons
    assert all(Path(s["path"]).name.endswith(".jpeg") and s["image_id"] for s in skipped)
    # The data line tells how many images are used: 75 of 80.
    line = next(x for x in run.out.splitlines() if x.startswith("data "))
    counts = [int(w.strip(",")) for w in line.split() if w.strip(",").isdigit()]
    assert sum(counts) == 75, line


def test_odd_but_usable_images_are_converted_and_used(runs):
    """PNG named .jpeg, 1x1, CMYK and 16-bit grey decode to RGB; nothing is skipped."""
    run = runs[("odd_images", False)]
    trained(run)
    meta = json.loads(next(run.cache.glob("*/meta.json")).read_text())
    assert meta["skipped"] == []
    assert meta["not_jpeg"]["count"] == 2  # the PNG and the 16-bit PNG were noticed


def test_bad_rows_are_listed_by_kind_with_their_line_and_fix(runs):
    message = refused(runs[("bad_rows", False)])
    assert "labels that are not an integer grade 0-4" in message
    assert "'mild'" in message and "'2.5'" in message
    assert "rows with too few fields" in message and "line 4" in message
    assert "names that would leave the image folder" in message
    assert "'../../etc/passwd'" in message and "'/etc/hostname'" in message
    assert "listed images not found" in message and "no_such_eye" in message
    assert "duplicate image ids" in message
    assert message.count("fix:") >= 5  # every kind names its fix


def test_integer_grades_written_as_floats_are_accepted(runs):
    trained(runs[("float_labels", False)])


def test_a_link_out_of_the_image_folder_is_refused(runs):
    message = refused(runs[("symlink_out", False)])
    assert "names that would leave the image folder" in message
    assert "-outside.jpeg" in message  # says where the link leads


@pytest.mark.parametrize("name", ["bom_crlf", "latin1", "utf16_bom"])
def test_csv_encodings_a_spreadsheet_writes_are_read(runs, name):
    trained(runs[(name, False)])


@pytest.mark.parametrize(
    "name,phrase",
    [
        ("utf16_no_bom", "NUL byte"),
        ("binary_csv", "NUL byte"),
        ("header_only", "has a header but no rows"),
    ],
)
def test_unreadable_or_empty_csvs_say_what_to_do(runs, name, phrase):
    message = refused(runs[(name, False)])
    assert phrase in message and CSV in message
