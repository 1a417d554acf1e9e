"""Decode-once image cache: uint8 [N, 3, S, S] in a .npy file, mapped (never copied) by trials.

A cache folder `<cache_root>/<manifest hash[:16]>-<S>px-<preprocessing>-v1/` holds `images.npy`
and `meta.json`; meta.json is written last, so its presence marks a complete cache. The folder
is built under a temporary name in the same cache root and renamed into place in one step, so
a reader never sees a half-built cache and two concurrent builders leave one valid cache.
`build_cache` is called by `retina.prepare.prepare_data` (e.g. through `python -m retina.train`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retina.errors import RetinaError
from retina.files import orphaned, temp_tag
from retina.images import BadImage, decode_fundus, preprocessing_fn
from retina.pools import worker_pool

log = logging.getLogger(__name__)

CACHE_VERSION = 1
IMAGES_FILE = "images.npy"
META_FILE = "meta.json"
MAX_LISTED = 20  # bad files named in one error message
_JPEG_SUFFIXES = (".jpeg", ".jpg")
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ImageCache:
    path: Path  # the .npy file holding uint8 [N, 3, S, S] (skipped rows are zeros)
    meta: dict  # the json beside it (see build_cache)

    def open(self) -> np.ndarray:
        """The images as a read-only memory map: pages are read on demand, nothing is copied."""
        return np.load(self.path, mmap_mode="r")

    @property
    def skipped_indices(self) -> frozenset[int]:
        return frozenset(int(s["index"]) for s in self.meta.get("skipped", []))


def default_cache_root() -> Path:
    """$RETINA_CACHE, else ~/.cache/retina-study."""
    env = os.environ.get("RETINA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "retina-study"


def cache_folder_name(manifest_hash: str, image_size: int, preprocessing: str) -> str:
    return f"{manifest_hash[:16]}-{image_size}px-{preprocessing}-v{CACHE_VERSION}"


def _bad_images_error(bad: list[dict[str, Any]], n: int) -> RetinaError:
    lines = [f"  {b['path']}: {b['reason']}" for b in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
    return RetinaError(
        f"{len(bad)} of {n} images cannot be used:\n"
        + "\n".join(lines)
        + "\nfix or remove these files, or pass --skip-bad to leave them out"
    )


def _decode_chunk(task: tuple[str, int, list[str], int, str]) -> tuple[int, list, list]:
    """Worker: decode paths[i] into row start+i of the (temporary) .npy file, in place.

    Returns (count, [(index, reason)] for bad files, [(index, format)] for decoded files that
    are not JPEG although named .jpeg/.jpg).
    """
    npy_path, start, paths, size, preprocessing = task
    images = np.load(npy_path, mmap_mode="r+")  # rows go straight to the file, not via the parent
    bad, mismatched = [], []
    for offset, path in enumerate(paths):
        try:
            row, fmt = decode_fundus(Path(path), size, preprocessing)
        except BadImage as exc:
            bad.append((start + offset, str(exc)))
            continue
        images[start + offset] = row
        if fmt != "JPEG" and path.lower().endswith(_JPEG_SUFFIXES):
            mismatched.append((start + offset, fmt))
    del images  # unmap; no msync: the final fsync makes the whole file durable at once
    return len(paths), bad, mismatched


def _temp_name(final: Path) -> str:
    return f"{_TEMP_PREFIX}{final.name}-{temp_tag()}"  # its writer: see _remove_stale_temps


def _remove_stale_temps(root: Path, final: Path) -> None:
    """Delete temporary folders of builders on this host that were killed (pid gone)."""
    for entry in root.glob(f"{_TEMP_PREFIX}{final.name}-*"):
        if orphaned(entry.name[len(f"{_TEMP_PREFIX}{final.name}-") :]):
            log.info("removing %s, left by a killed build", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_write_for_others(path: Path) -> None:
    """Cache files must not be writable by group/others, whatever the umask."""
    os.chmod(path, os.stat(path).st_mode & 0o755)


def _open_existing(
    folder: Path, manifest, manifest_hash: str, image_size: int, preprocessing: str, skip_bad: bool
) -> ImageCache:
    meta_path, npy_path = folder / META_FILE, folder / IMAGES_FILE
    try:
        meta = json.loads(meta_path.read_text())
        shape = np.load(npy_path, mmap_mode="r").shape  # reads the header only
    except (OSError, ValueError) as exc:
        raise RetinaError(
            f"cache {folder} is unreadable ({exc}); delete that folder and run again to rebuild it"
        ) from None
    expected = (len(manifest), 3, image_size, image_size)
    if (
        meta.get("version") != CACHE_VERSION
        or meta.get("manifest_hash") != manifest_hash
        or meta.get("n") != len(manifest)
        or meta.get("image_size") != image_size
        or meta.get("preprocessing") != preprocessing
        or tuple(shape) != expected
    ):
        raise RetinaError(
            f"cache {folder} does not match this dataset (holds {tuple(shape)}, expected "
            f"{expected}); delete that folder and run again to rebuild it"
        )
    if meta.get("skipped") and not skip_bad:
        # Same answer as when the cache was built: these files are still bad.
        raise _bad_images_error(meta["skipped"], len(manifest))
    log.info("using cached images in %s", folder)
    return ImageCache(path=npy_path, meta=meta)


def _check_space(root: Path, nbytes: int) -> None:
    free = shutil.disk_usage(root).free
    if free < nbytes + (64 << 20):
        raise RetinaError(
            f"cache needs {nbytes / 1e9:.2f} GB but {root} has {free / 1e9:.2f} GB free; "
            "free some space or point RETINA_CACHE (or --cache-dir) at a larger disk"
        )


def _build_into(
    tmp: Path, manifest, size: int, preprocessing: str, workers: int, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Decode every image into tmp/images.npy; returns (bad files, statistics for meta)."""
    n = len(manifest)
    npy_path = tmp / IMAGES_FILE
    shape = (n, 3, size, size)
    _check_space(tmp.parent, math.prod(shape))
    images = np.lib.format.open_memmap(npy_path, mode="w+", dtype=np.uint8, shape=shape)
    header = images.offset
    del images  # workers reopen it; the file is already full-size (sparse, zero-filled)
    _drop_write_for_others(npy_path)
    try:
        # Reserve the blocks now: a disk that fills up under a memory map kills the writer
        # with SIGBUS instead of raising a clean error.
        with open(npy_path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, header + math.prod(shape))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RetinaError(
                f"no space left for the cache in {tmp.parent}; free some space or point "
                "RETINA_CACHE (or --cache-dir) at a larger disk"
            ) from None  # other errnos: the filesystem cannot preallocate; carry on

    paths = [str(p) for p in manifest.paths]
    chunk = max(1, min(32, math.ceil(n / (workers * 4))))
    tasks = [
        (str(npy_path), i, paths[i : i + chunk], size, preprocessing) for i in range(0, n, chunk)
    ]
    bad: list[dict[str, Any]] = []
    mismatched: list[tuple[int, str]] = []
    bar = tqdm(
        total=n,
        unit="img",
        desc=f"caching {n} images at {size}px",
        file=sys.stderr,
        disable=not progress,
        smoothing=0.1,
    )
    started = time.perf_counter()

    def collect(results) -> None:
        for count, chunk_bad, chunk_mismatched in results:
            bad.extend(
                {"index": i, "image_id": manifest.image_ids[i], "path": paths[i], "reason": why}
                for i, why in chunk_bad
            )
            mismatched.extend(chunk_mismatched)
            bar.update(count)

    with bar:
        if workers == 1:
            collect(map(_decode_chunk, tasks))  # no pool: nothing to spawn for one core
        else:
            with worker_pool(workers) as pool:
                collect(pool.imap(_decode_chunk, tasks))
    seconds = time.perf_counter() - started
    formats = Counter(fmt for _, fmt in mismatched)
    if mismatched:
        log.warning(
            "%d files named .jpeg/.jpg hold another format (%s), e.g. %s; decoded them anyway",
            len(mismatched),
            ", ".join(f"{k}: {v}" for k, v in sorted(formats.items())),
            paths[mismatched[0][0]],
        )
    stats = {
        "build_seconds": round(seconds, 3),
        "images_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "workers": workers,
        "not_jpeg": {"count": len(mismatched), "formats": dict(formats)},
    }
    return sorted(bad, key=lambda b: b["index"]), stats


def build_cache(
    manifest,
    image_size: int,
    preprocessing: str = "none",
    *,
    cache_root: Path | str | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ImageCache:
    """The cache of `manifest` at `image_size`: reused when complete, else built and validated.

    Building decodes every image once on `workers` processes (default: all cores) with a
    progress bar. Bad images raise one RetinaError listing them, leaving nothing behind; with
    `skip_bad` their rows stay zero and meta["skipped"] lists index, image_id, path and reason.
    """
    preprocessing_fn(preprocessing)  # unknown names fail before any work
    if not isinstance(image_size, int) or image_size < 1:
        raise RetinaError(f"image size must be a positive integer, got {image_size!r}")
    if len(manifest) == 0:
        raise RetinaError("the dataset lists no images; add images and labels to its CSV")
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise RetinaError(
            f"cannot create cache folder {root} ({exc.strerror}); "
            "set RETINA_CACHE (or --cache-dir) to a writable folder"
        ) from None
    manifest_hash = manifest.content_hash()
    final = root / cache_folder_name(manifest_hash, image_size, preprocessing)
    if (final / META_FILE).exists():
        return _open_existing(final, manifest, manifest_hash, image_size, preprocessing, skip_bad)
    if final.exists():
        raise RetinaError(
            f"{final} exists but is not a complete cache (no {META_FILE}); "
            "delete that folder and run again"
        )

    workers = max(1, min(workers or os.cpu_count() or 1, len(manifest)))
    _remove_stale_temps(root, final)
    # Unique per process and call, inside cache_root so the final rename stays on one filesystem.
    tmp = root / _temp_name(final)
    try:
        tmp.mkdir(mode=0o755)
        bad, stats = _build_into(tmp, manifest, image_size, preprocessing, workers, progress)
        if bad and not skip_bad:
            raise _bad_images_error(bad, len(manifest))
        if bad:
            log.warning(
                "skipped %d of %d images that cannot be used (--skip-bad); "
                "they are listed under 'skipped' in %s",
                len(bad),
                len(manifest),
                final / META_FILE,
            )
        meta = {
            "version": CACHE_VERSION,
            "manifest_hash": manifest_hash,
            "image_size": image_size,
            "preprocessing": preprocessing,
            "n": len(manifest),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **stats,
            "skipped": bad,
        }
        _fsync(tmp / IMAGES_FILE)  # the data must be on disk before meta.json vouches for it
        meta_path = tmp / META_FILE
        with open(meta_path, "w") as fh:
            json.dump(meta, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        _drop_write_for_others(meta_path)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and (final / META_FILE).exists():
                # Another process finished the same cache first: keep theirs, drop ours.
                shutil.rmtree(tmp, ignore_errors=True)
                return _open_existing(
                    final, manifest, manifest_hash, image_size, preprocessing, skip_bad
                )
            raise
        with contextlib.suppress(OSError):  # some filesystems cannot fsync a folder
            _fsync(root)  # make the rename itself durable
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImageCache(path=final / IMAGES_FILE, meta=meta)
