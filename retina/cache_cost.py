"""What the decode-once caches of a dataset cost on disk, said before any is built.

    costs = cache_costs(manifest, [256, 384, 512], "none", cache_root)
    print("\\n".join(cost_lines(costs, root)))   # sizes, built or not, free disk
    check_fits(costs, root)                      # RetinaError with the numbers, nothing written

`retina.prepare.prepare_data` checks every size a run needs at once, so a study that searches
three sizes is refused before the first is built rather than when the disk fills at the third.
A cache is uint8 [N, 3, S, S]: N * 3 * S * S bytes (plus a 128-byte .npy header).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retina.cache import META_FILE, cache_folder_name, default_cache_root
from retina.errors import RetinaError

HEADROOM = 64 << 20  # left free beside a cache: the .npy header, meta.json, the folder itself


@dataclass(frozen=True)
class CacheCost:
    size: int  # px
    nbytes: int  # on disk once built
    folder: Path
    built: bool  # a complete cache (meta.json) is already there: it costs nothing more


def cache_bytes(n_images: int, size: int) -> int:
    """Bytes of one decode-once cache: uint8 [N, 3, S, S]."""
    return n_images * 3 * size * size


def cache_costs(
    manifest, sizes: Sequence[int], preprocessing: str, cache_root: Path | str | None
) -> list[CacheCost]:
    """The cache of `manifest` at each size: its folder, its bytes and whether it is built."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    digest = manifest.content_hash()
    out = []
    for size in sorted(set(sizes)):
        folder = root / cache_folder_name(digest, size, preprocessing)
        out.append(CacheCost(size, cache_bytes(len(manifest), size), folder,
                             (folder / META_FILE).exists()))  # fmt: skip
    return out


def free_bytes(root: Path) -> int:
    """Free space on the disk that holds `root` (or would: its nearest existing parent)."""
    path = root.resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def gb(nbytes: int) -> str:
    """27.62 GB, or 2.0 MB below a gigabyte (decimal units, as df -H shows them)."""
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def cost_lines(costs: Sequence[CacheCost], root: Path) -> list[str]:
    """One line per cache and one for the disk, e.g. `cache 512 px: 27.62 GB, to build (folder)`."""
    lines = [
        f"cache {c.size} px: {gb(c.nbytes)}, {'built' if c.built else 'to build'} ({c.folder})"
        for c in costs
    ]
    needed = sum(c.nbytes for c in costs if not c.built)
    lines.append(f"cache disk: {gb(needed)} to write, {gb(free_bytes(root))} free at {root}")
    return lines


@dataclass(frozen=True)
class DataPlan:
    """What preparing a dataset will take, known before any image is decoded."""

    images: dict[str, int]  # split name -> images in it
    caches: list[CacheCost]
    root: Path

    def lines(self) -> list[str]:
        split = ", ".join(f"{name} {n:,}" for name, n in self.images.items())
        return [f"images: {split} ({sum(self.images.values()):,} in all)",
                *cost_lines(self.caches, self.root)]  # fmt: skip


def check_fits(costs: Sequence[CacheCost], root: Path) -> None:
    """RetinaError naming the numbers when the caches still to build do not fit in free disk."""
    todo = [c for c in costs if not c.built]
    needed = sum(c.nbytes for c in todo)
    free = free_bytes(root)
    if todo and free < needed + HEADROOM * len(todo):
        sizes = ", ".join(f"{c.size} px {gb(c.nbytes)}" for c in todo)
        raise RetinaError(
            f"the decode-once cache needs {gb(needed)} ({sizes}) but {root} has {gb(free)} "
            "free; free some space, point RETINA_CACHE (or --cache-dir) at a larger disk, "
            "or use fewer or smaller image sizes"
        )
