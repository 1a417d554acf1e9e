"""An external test set: a data folder from elsewhere, read by the development data's readers
(`retina.manifest.read_manifest`: any layout it detects) and decoded once into the cache at
every size the study can use, all of it the `test` split (nothing is fitted on it).

    ext = prepare_external("/data/messidor2", [224, 384], "graham", name="messidor2")
    ext.at_size(384).loader("test", 64, device, train=False)   # every usable image, in order

`python -m study.sweep SPACE.yaml --external messidor2=/data/messidor2` prepares it in the
preflight; `study.conclude.external` tests the winner and the confirm runs on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retina.errors import RetinaError
from retina.manifest import read_manifest
from retina.prepare import PreparedData, build_caches
from retina.split import Split

EMPTY = np.zeros(0, dtype=np.int64)


def prepare_external(
    path: str | Path,
    sizes: Sequence[int],
    preprocessing: str,
    *,
    name: str,
    skip_bad: bool = False,
    cache_root: str | Path | None = None,
    progress: bool = True,
    development: Path | None = None,
) -> PreparedData:
    """The set at `path` with a cache per size; its `test` split holds every usable image
    (train and val are empty). `name` is the set's name in messages; `development`, the
    development data's folder, which an external set must not be."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise RetinaError(
            f"external set {name}: {folder} {what}; give the folder that holds its images and "
            f"label file(s) (external: [{{name: {name}, path: DIR}}] or --external {name}=DIR)"
        )
    if development is not None and folder.resolve() == Path(development).resolve():
        raise RetinaError(
            f"external set {name}: {folder} is the development data (data.path); an external "
            "test set must come from elsewhere: give another folder"
        )
    try:
        manifest = read_manifest(folder)
    except RetinaError as exc:
        raise RetinaError(f"external set {name}: {exc}") from None
    ordered = sorted(set(sizes))
    caches = build_caches(manifest, ordered, preprocessing, cache_root, skip_bad, progress)
    skipped = frozenset().union(*(c.skipped_indices for c in caches.values()))
    usable = np.array([i for i in range(len(manifest)) if i not in skipped], dtype=np.int64)
    if not len(usable):
        raise RetinaError(f"external set {name}: no usable image in {folder}; fix its images")
    return PreparedData.of(
        manifest, caches, Split(train=EMPTY, val=EMPTY, test=usable, seed=0), preprocessing
    )
