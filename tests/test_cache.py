"""The decode-once cache: built once, reused without decoding, atomic, and strict about bad images."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from retina.cache import build_cache, default_cache_root
from retina.errors import RetinaError
from retina.images import load_fundus
from retina.manifest import read_manifest

SIZE = 24


def disc(seed: int, width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    """An orange-ish disc on black; the colour varies with `seed` so rows differ."""
    img = Image.new("RGB", (width, height))
    colour = (200 + seed % 50, 90 + (7 * seed) % 60, 30 + (13 * seed) % 40)
    ImageDraw.Draw(img).ellipse((8, 0, width - 8, height - 1), fill=colour)
    return img if mode == "RGB" else img.convert(mode)


def make_dataset(folder: Path, n: int) -> Path:
    """Kaggle layout: trainLabels.csv and n JPEGs `<patient>_<eye>.jpeg` in train/."""
    (folder / "train").mkdir(parents=True)
    rows = ["image,level"]
    for i in range(n):
        name = f"{i // 2}_{'left' if i % 2 == 0 else 'right'}"
        disc(i).save(folder / "train" / f"{name}.jpeg", quality=90)
        rows.append(f"{name},{i % 5}")
    (folder / "trainLabels.csv").write_text("\n".join(rows) + "\n")
    return folder


def folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_built_once_then_reused_without_decoding(tmp_path):
    data, root = make_dataset(tmp_path / "data", 10), tmp_path / "cache"
    manifest = read_manifest(data)
    cache = build_cache(manifest, SIZE, cache_root=root, workers=1, progress=False)
    arr = cache.open()
    assert isinstance(arr, np.memmap) and not arr.flags.writeable  # mapped, never a copy
    assert arr.shape == (10, 3, SIZE, SIZE) and arr.dtype == np.uint8
    for i, path in enumerate(manifest.paths):
        np.testing.assert_array_equal(arr[i], load_fundus(path, SIZE))
    meta = json.loads((cache.path.parent / "meta.json").read_text())
    assert meta == cache.meta
    assert meta["manifest_hash"] == manifest.content_hash() and meta["n"] == 10
    assert meta["image_size"] == SIZE and meta["preprocessing"] == "none"
    assert meta["skipped"] == [] and meta["version"] == 1 and meta["images_per_s"] > 0
    assert {"created", "build_seconds"} <= set(meta)
    assert cache.path.parent.name == f"{manifest.content_hash()[:16]}-{SIZE}px-none-v1"

    # Overwrite every image with garbage of the same size and mtime: the manifest hash is
    # unchanged, so any decode in the second call would fail with a bad-image error.
    for path in manifest.paths:
        st = os.stat(path)
        path.write_bytes(b"x" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = build_cache(read_manifest(data), SIZE, cache_root=root, workers=1, progress=False)
    assert again.path == cache.path and again.meta == cache.meta
    np.testing.assert_array_equal(again.open(), arr)
    assert folders(root) == [cache.path.parent.name]


def test_pool_build_matches_single_process_and_variants_get_their_own_folder(tmp_path):
    manifest = read_manifest(make_dataset(tmp_path / "data", 9))
    one = build_cache(manifest, SIZE, cache_root=tmp_path / "a", workers=1, progress=False)
    two = build_cache(manifest, SIZE, cache_root=tmp_path / "b", workers=2, progress=False)
    np.testing.assert_array_equal(one.open(), two.open())
    assert two.meta["workers"] == 2
    graham = build_cache(manifest, SIZE, "graham", cache_root=tmp_path / "a", workers=1)
    assert graham.path.parent.name.endswith(f"-{SIZE}px-graham-v1")
    assert len(folders(tmp_path / "a")) == 2
    assert not np.array_equal(graham.open(), one.open())


BUILDER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from retina.cache import build_cache
    from retina.manifest import read_manifest
    data, root, go = sys.argv[1:4]
    manifest = read_manifest(data)
    while not Path(go).exists():  # start both builds at the same moment
        time.sleep(0.005)
    cache = build_cache(manifest, int(sys.argv[4]), cache_root=root, workers=1, progress=False)
    print(json.dumps({"path": str(cache.path), "created": cache.meta["created"]}))
    """
)


def test_concurrent_builders_end_with_one_valid_cache(tmp_path):
    data, root, go = make_dataset(tmp_path / "data", 40), tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILDER, str(data), str(root), str(go), str(SIZE)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    time.sleep(1.0)  # let both import and read the manifest
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0] == results[1]  # both use the one cache that won the rename
    final = Path(results[0]["path"]).parent
    assert folders(root) == [final.name]  # no temporary folder left behind
    manifest = read_manifest(data)
    arr = np.load(final / "images.npy", mmap_mode="r")
    for i in (0, 17, 39):
        np.testing.assert_array_equal(arr[i], load_fundus(manifest.paths[i], SIZE))


def png_claiming_size(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:20], data[20:24] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def make_messy_dataset(folder: Path) -> tuple[Path, dict[int, str]]:
    """8 images: 4 unusable (index -> reason start) and 4 unusual but convertible."""
    make_dataset(folder, 8)
    train = folder / "train"
    (train / "0_left.jpeg").write_bytes(b"")  # 0
    good = (train / "0_right.jpeg").read_bytes()
    (train / "0_right.jpeg").write_bytes(good[: len(good) // 2])  # 1: truncated
    (train / "1_left.jpeg").write_text("id,grade\n1,2\n")  # 2: a text file
    (train / "1_right.jpeg").write_bytes(png_claiming_size(100_000, 100_000))  # 3: bomb
    disc(4).save(train / "2_left.jpeg", format="PNG")  # 4: PNG under a .jpeg name
    disc(5, mode="CMYK").save(train / "2_right.jpeg", format="JPEG")  # 5: CMYK
    disc(6, mode="L").save(train / "3_left.jpeg", format="JPEG")  # 6: grayscale
    grey16 = (np.asarray(disc(7, mode="L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(train / "3_right.jpeg", format="PNG")  # 7: 16-bit PNG
    reasons = {
        0: "empty file (0 bytes)",
        1: "truncated or corrupt JPEG",
        2: "not an image",
        3: "image too large",
    }
    return folder, reasons


def test_bad_images_fail_together_and_leave_nothing_behind(tmp_path):
    data, reasons = make_messy_dataset(tmp_path / "data")
    manifest, root = read_manifest(data), tmp_path / "cache"
    with pytest.raises(RetinaError) as info:
        build_cache(manifest, SIZE, cache_root=root, workers=2, progress=False)
    message = str(info.value)
    assert message.startswith("4 of 8 images cannot be used")
    for index, reason in reasons.items():
        assert f"{manifest.paths[index]}: {reason}" in message
    for index in (4, 5, 6, 7):
        assert str(manifest.paths[index]) not in message  # converted, not reported
    assert "fix or remove these files, or pass --skip-bad to leave them out" in message
    assert folders(root) == []  # neither the cache nor a temporary folder


def test_skip_bad_records_skips_and_keeps_converted_images(tmp_path):
    data, reasons = make_messy_dataset(tmp_path / "data")
    manifest, root = read_manifest(data), tmp_path / "cache"
    cache = build_cache(manifest, SIZE, cache_root=root, skip_bad=True, workers=1, progress=False)
    assert cache.skipped_indices == frozenset(reasons)
    for entry in cache.meta["skipped"]:
        assert set(entry) == {"index", "image_id", "path", "reason"}
        assert entry["image_id"] == manifest.image_ids[entry["index"]]
        assert entry["path"] == str(manifest.paths[entry["index"]])
        assert entry["reason"].startswith(reasons[entry["index"]])
    arr = cache.open()
    assert not arr[sorted(reasons)].any()  # skipped rows are zeros
    for i in (4, 5, 6, 7):
        assert arr[i].max() > 100  # the converted disc is there
    assert cache.meta["not_jpeg"]["count"] == 2  # the PNGs under .jpeg names

    # Reusing it without --skip-bad reports the same files again, without decoding.
    with pytest.raises(RetinaError, match="4 of 8 images cannot be used"):
        build_cache(manifest, SIZE, cache_root=root, progress=False)
    assert build_cache(manifest, SIZE, cache_root=root, skip_bad=True).path == cache.path


def test_long_lists_of_bad_files_are_cut_at_twenty(tmp_path):
    data = make_dataset(tmp_path / "data", 25)
    for path in (data / "train").iterdir():
        path.write_bytes(b"")
    with pytest.raises(RetinaError) as info:
        build_cache(read_manifest(data), SIZE, cache_root=tmp_path / "c", workers=1)
    assert "25 of 25 images" in str(info.value) and "... and 5 more" in str(info.value)
    assert str(info.value).count("empty file (0 bytes)") == 20


def test_cache_files_are_not_world_writable(tmp_path):
    manifest = read_manifest(make_dataset(tmp_path / "data", 3))
    old = os.umask(0)
    try:
        cache = build_cache(manifest, SIZE, cache_root=tmp_path / "c", workers=1, progress=False)
    finally:
        os.umask(old)
    for path in (cache.path, cache.path.parent / "meta.json", cache.path.parent):
        assert not os.stat(path).st_mode & (stat.S_IWGRP | stat.S_IWOTH), path


def test_temporary_folders_of_killed_builders_are_removed(tmp_path):
    manifest = read_manifest(make_dataset(tmp_path / "data", 2))
    root = tmp_path / "c"
    name = f"{manifest.content_hash()[:16]}-{SIZE}px-none-v1"
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    host = socket.gethostname()
    dead = root / f".tmp-{name}-{host}-{int(finished.stdout)}-0badc0de"
    alive = root / f".tmp-{name}-{host}-{os.getpid()}-0badc0de"  # a build still running
    elsewhere = root / f".tmp-{name}-other-host-1-0badc0de"  # another machine's build
    for folder in (dead, alive, elsewhere):
        folder.mkdir(parents=True)
        (folder / "images.npy").write_bytes(b"partial")
    cache = build_cache(manifest, SIZE, cache_root=root, workers=1, progress=False)
    assert folders(root) == sorted([cache.path.parent.name, alive.name, elsewhere.name])


def test_unknown_preprocessing_fails_before_any_work(tmp_path):
    manifest = read_manifest(make_dataset(tmp_path / "data", 2))
    with pytest.raises(RetinaError, match="unknown preprocessing 'clahe'"):
        build_cache(manifest, SIZE, "clahe", cache_root=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_incomplete_final_folder_is_reported(tmp_path):
    manifest = read_manifest(make_dataset(tmp_path / "data", 2))
    root = tmp_path / "c"
    (root / f"{manifest.content_hash()[:16]}-{SIZE}px-none-v1").mkdir(parents=True)
    with pytest.raises(RetinaError, match="not a complete cache.*delete that folder"):
        build_cache(manifest, SIZE, cache_root=root, workers=1, progress=False)


def test_unreadable_cache_names_the_folder_and_the_fix(tmp_path):
    manifest = read_manifest(make_dataset(tmp_path / "data", 2))
    cache = build_cache(manifest, SIZE, cache_root=tmp_path / "c", workers=1, progress=False)
    (cache.path.parent / "meta.json").write_text("{")
    with pytest.raises(RetinaError, match="unreadable.*delete that folder"):
        build_cache(manifest, SIZE, cache_root=tmp_path / "c", workers=1, progress=False)


def test_default_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path / "here"))
    assert default_cache_root() == tmp_path / "here"
    monkeypatch.delenv("RETINA_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "retina-study"


POOLS_UNDER_A_RETURNING_HANDLER = """
import signal, time
from retina.pools import worker_pool
signal.signal(signal.SIGTERM, lambda signum, frame: None)  # returns, as asyncio's does
for _ in range(40):  # quick pools: a worker may still be starting when the work is done
    with worker_pool(2) as pool:
        assert list(pool.imap(abs, range(-3, 0))) == [3, 2, 1]
try:
    with worker_pool(2) as pool:  # an error while both workers are busy: terminate()
        busy = [pool.apply_async(time.sleep, (300,)) for _ in range(2)]
        time.sleep(0.5)
        raise RuntimeError("stop")
except RuntimeError:
    print("ended")
"""


def test_pools_end_whatever_sigterm_handler_the_caller_has():
    # An in-process Ray cluster, asyncio or a library may leave a SIGTERM handler that returns.
    # A worker that kept it (or got terminate()'s SIGTERM before resetting it) survives, then
    # waits forever for the queue's lock that Pool.terminate() holds: its caller hangs. Run in
    # its own session so that a hang is bounded and leaves no process behind.
    proc = subprocess.Popen([sys.executable, "-c", POOLS_UNDER_A_RETURNING_HANDLER],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        pytest.fail("a worker pool did not end: a worker survived the SIGTERM meant to end it")
    assert proc.returncode == 0 and out.strip() == "ended"
