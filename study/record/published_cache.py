"""The decode-once cache, published to the study's storage so that a node without the data
(or without the driver's disk) can still train: the driver builds it in the preflight, as
always, and publishes it here; a trial on a node whose cache folder lacks it fetches it once.

    publish(storage, data.cache)            # the preflight (bytes sent; 0: already there)
    fetch(storage, cache.path.parent)       # a trial's node (bytes fetched; 0: it had it)

Content-addressed: `<storage>/caches/<manifest hash>-<size>px-<preprocessing>-v1/` (the
cache's own folder name, `retina.cache.cache_folder_name`) holds `images.npy`, `meta.json` and,
written last, `published.json` (the images' SHA-256 and size): a cache is published whole or
not at all. A fetch is verified by that hash, written under a temporary name and renamed into
place, and held under a file lock, so concurrent trials on one node download it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from retina.cache import IMAGES_FILE, META_FILE, ImageCache
from retina.errors import RetinaError
from study.record.storage import Storage

CACHES = "caches"
PUBLISHED = "published.json"
CHUNK = 8 << 20


def _remote(storage: Storage, folder_name: str) -> str:
    return f"{storage.root.rstrip('/')}/{CACHES}/{folder_name}"


def publish(storage: Storage, cache: ImageCache) -> int:
    """Upload `cache` unless the storage holds it already; the bytes uploaded."""
    folder = cache.path.parent
    remote = _remote(storage, folder.name)
    if storage.fs.get_file_info(f"{remote}/{PUBLISHED}").type == pafs.FileType.File:
        return 0
    digest, size = hashlib.sha256(), 0
    with (
        open(cache.path, "rb") as src,
        storage.fs.open_output_stream(f"{remote}/{IMAGES_FILE}") as out,
    ):
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    meta = (folder / META_FILE).read_bytes()
    with storage.fs.open_output_stream(f"{remote}/{META_FILE}") as out:
        out.write(meta)
    record = {"sha256": digest.hexdigest(), "bytes": size}
    with storage.fs.open_output_stream(f"{remote}/{PUBLISHED}") as out:  # last: it vouches
        out.write(json.dumps(record).encode())
    return size + len(meta)


def fetch(storage: Storage, folder: Path) -> int:
    """Put the published cache `folder` (its final local path) in place; the bytes fetched
    (0 when it was there already, or another trial on this node fetched it meanwhile).
    RetinaError when the storage does not hold it or its copy is damaged."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remote = _remote(storage, folder.name)
    with open(folder.parent / f".{folder.name}.fetch-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per node; released if we die
        if (folder / META_FILE).exists():
            return 0
        try:
            with storage.fs.open_input_stream(f"{remote}/{PUBLISHED}") as src:
                record = json.loads(src.read())
        except (OSError, ValueError):
            raise RetinaError(
                f"the cache {folder.name} is neither on this node ({folder}) nor published in "
                f"{storage.uri}; run the study's driver with the same --storage (it publishes "
                "the cache in its preflight), or give every node the data"
            ) from None
        partial = folder.with_name(f".{folder.name}.fetching")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            digest, size = hashlib.sha256(), 0
            with storage.fs.open_input_stream(f"{remote}/{IMAGES_FILE}") as src, \
                    open(partial / IMAGES_FILE, "wb") as out:  # fmt: skip
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            if digest.hexdigest() != record["sha256"] or size != record["bytes"]:
                raise RetinaError(
                    f"the published cache {remote} is damaged (its SHA-256 differs from "
                    f"{PUBLISHED}); delete that folder in the storage and run the driver again"
                )
            with storage.fs.open_input_stream(f"{remote}/{META_FILE}") as src:
                meta = src.read()
            (partial / META_FILE).write_bytes(meta)  # last: a complete cache, as a build ends
            partial.rename(folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return size + len(meta)
