"""From a data folder to what a training run needs: manifest -> cache -> split -> checks.

No command of its own: `python -m retina.train --data DIR ...` and the study's trainable call
`prepare_data`. Every problem with the data surfaces here, before any training starts, as one
`RetinaError` that names the file, split or grade and the fix.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retina.cache import ImageCache, build_cache, default_cache_root
from retina.cache_cost import DataPlan, cache_costs, check_fits
from retina.errors import RetinaError
from retina.layouts import PUBLISHED, SPLITS
from retina.loader import BatchLoader
from retina.manifest import Manifest, read_manifest
from retina.split import SPLIT_NAMES, Split, split_by_patient, uses_given_split

NUM_GRADES = 5


@dataclass(frozen=True, eq=False)
class PreparedData:
    """One split of one dataset, decoded at `image_size` (`cache`); `caches` holds every size
    prepared (a study that searches `data.image_size`), and `at_size` picks one of them."""

    cache: ImageCache
    labels: np.ndarray  # int64 [N] over the whole manifest; the split's indices select from it
    split: Split
    manifest_hash: str
    layout: str
    data_dir: Path
    image_size: int
    preprocessing: str
    # Per manifest row, like `labels`: what a per-image prediction names (image id, patient).
    image_ids: tuple[str, ...] = ()
    patient_ids: tuple[str, ...] = ()
    caches: Mapping[int, ImageCache] = field(default_factory=dict)  # size -> its cache
    split_mode: str = "patient"  # data.split: "patient" | "published"
    ungradable: int = 0  # images the dataset grades ungradable: left out of every split
    summary: tuple[str, ...] = ()  # the data summary's lines (`data_summary`)

    @classmethod
    def of(
        cls, manifest: Manifest, caches: Mapping[int, ImageCache], split: Split,
        preprocessing: str, **more: Any,
    ) -> PreparedData:  # fmt: skip
        """`manifest`'s images with `split`, at the smallest of its `caches` (a study's data, or
        an external set's); `more`: the other fields (split_mode, summary, ...)."""
        size = min(caches)
        cache = caches[size]
        return cls(
            cache=cache,
            labels=manifest.labels,
            split=split,
            manifest_hash=str(cache.meta.get("manifest_hash") or manifest.content_hash()),
            layout=manifest.layout,
            data_dir=manifest.root,
            image_size=size,
            preprocessing=preprocessing,
            image_ids=manifest.image_ids,
            patient_ids=manifest.patient_ids,
            caches=caches,
            **more,
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        """The sizes prepared, smallest first (just `image_size` when only one was)."""
        return tuple(sorted(self.caches)) or (self.image_size,)

    def at_size(self, size: int) -> PreparedData:
        """The same images and split at `size` px: the cache prepared for it, never a new one."""
        if size == self.image_size:
            return self
        if size not in self.caches:
            raise RetinaError(
                f"no decode-once cache at {size} px was prepared (prepared: "
                f"{', '.join(map(str, self.sizes))} px); prepare the data with every size "
                "the study's data.image_size names"
            )
        return replace(self, cache=self.caches[size], image_size=size)

    def class_counts(self) -> dict[str, list[int]]:
        """Images per grade 0-4 in each split: {"train": [5 ints], "val": ..., "test": ...}."""
        return {name: _grade_counts(self.labels, self.split.indices(name)) for name in SPLIT_NAMES}

    def loader(
        self,
        split_name: str,
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        seed: int = 0,
        augment: str = "flips",
    ) -> BatchLoader:
        """Batches of one split, sliced from the memory-mapped cache (never copied);
        `augment` (retina.augment.AUGMENTS) applies to training batches only."""
        indices = self.split.indices(split_name)
        return BatchLoader(
            self.cache.open(), self.labels, indices, batch_size, device, train=train, seed=seed,
            augment=augment,
        )  # fmt: skip

    def on_this_machine(self, fetch: Callable[[Path], object] | None = None) -> PreparedData:
        """This data with a cache on this machine: itself, or a cache built here once.

        On a cluster without a shared cache folder, the first trial on a node fetches the
        cache where `fetch(cache folder)` can (the study's storage: study.record.
        published_cache), else decodes the images there. The split is kept as the driver
        made it, never redone per node.
        """
        if self.cache.path.exists():
            return self
        if fetch is not None:
            fetch(self.cache.path.parent)  # the same content-addressed folder, now here
            return self
        manifest = read_manifest(self.data_dir, self.layout)
        if manifest.content_hash() != self.manifest_hash:
            raise RetinaError(
                f"the data in {self.data_dir} on this node differs from the driver's "
                "(content hash); give every node the same files, or a shared --cache-dir"
            )
        cache = build_cache(
            manifest,
            self.image_size,
            self.preprocessing,
            cache_root=self.cache.path.parent.parent,
            skip_bad=bool(self.cache.skipped_indices),
            progress=False,
        )
        return replace(self, cache=cache)


def prepare_data(
    data_dir: str | Path,
    image_size: int | Sequence[int],
    preprocessing: str = "none",
    *,
    split_seed: int = 0,
    skip_bad: bool = False,
    cache_root: str | Path | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    progress: bool = True,
    layout: str = "auto",
    split_mode: str = "patient",
    announce: Callable[[DataPlan], None] | None = None,
) -> PreparedData:
    """Read, cache (validating every image), split and check the dataset in `data_dir`.

    `image_size` may list several sizes: one split, a decode-once cache per size (built once,
    before any training), and the result is at the smallest; `at_size` gives the others.
    `layout`: detected ("auto") or forced; `split_mode`: "patient", or "published" to keep the
    dataset's own train/test split (IDRiD, DDR; the lab's is always kept).
    Before any cache is built, `announce` gets the plan (images per split, each cache's size on
    disk and whether it is built; with `progress` and no `announce`, its lines go to stderr),
    and caches that will not fit in free disk are refused with the numbers."""
    sizes = sorted(set([image_size] if isinstance(image_size, int) else image_size))
    manifest = read_manifest(data_dir, layout)
    published = _published(manifest, split_mode)
    # Split and check once before the cache: bad fractions or a dataset too small for them are
    # reported in a second rather than after decoding every image. Skipping bad images later
    # only removes images, so a dataset that passes here is checked again below.
    split = split_by_patient(manifest, split_seed, val_fraction, test_fraction, published=published)
    _check_split(manifest, split, skipped=0, val_fraction=val_fraction, test_fraction=test_fraction, published=published)  # fmt: skip
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    costs = cache_costs(manifest, sizes, preprocessing, root)
    plan = DataPlan({name: len(split.indices(name)) for name in SPLIT_NAMES}, costs, root)
    if announce is not None:
        announce(plan)
    elif progress:
        print("\n".join(plan.lines()), file=sys.stderr)
    check_fits(costs, root)  # every size at once: not after the first of three is built
    caches = build_caches(manifest, sizes, preprocessing, cache_root, skip_bad, progress)
    # A file that cannot be decoded fails at every size; the union is kept out of the split.
    skipped = frozenset().union(*(c.skipped_indices for c in caches.values()))
    if skipped:
        split = split_by_patient(
            manifest, split_seed, val_fraction, test_fraction, exclude=skipped, published=published
        )
        _check_split(
            manifest,
            split,
            skipped=len(skipped),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            published=published,
        )
    return PreparedData.of(
        manifest,
        caches,
        split,
        preprocessing,
        split_mode=split_mode,
        ungradable=len(manifest.ungradable),
        summary=tuple(data_summary(manifest, split, published)),
    )


def _published(manifest: Manifest, split_mode: str) -> bool:
    """Whether `data.split` asks for the dataset's own split; RetinaError where it has none."""
    if split_mode not in SPLITS:
        raise RetinaError(f"data.split: {split_mode!r}; use one of {', '.join(SPLITS)}")
    if split_mode == "published" and manifest.given_split is None:
        raise RetinaError(
            f"data.split: published, but the {manifest.layout} layout of {manifest.root} "
            f"publishes no train/test split (those that do: {', '.join(PUBLISHED)}); "
            "use data.split: patient"
        )
    return split_mode == "published"


def data_summary(manifest: Manifest, split: Split, published: bool) -> list[str]:
    """What the preflight (and retina.train) print about the data: layout, images, patients,
    ungradable images left out, and which split."""
    used = np.concatenate([split.indices(name) for name in SPLIT_NAMES])
    patients = len({manifest.patient_ids[i] for i in used.tolist()})
    lines = [
        f"data: {manifest.root} read as the {manifest.layout} layout: {len(used)} images "
        f"of {patients} patients"
    ]
    if manifest.ungradable:
        shown = ", ".join(manifest.ungradable[:5]) + (
            ", ..." if len(manifest.ungradable) > 5 else ""
        )
        lines.append(
            f"  {len(manifest.ungradable)} image(s) the dataset grades ungradable are left out "
            f"(never given a grade): {shown}"
        )
    lines += [f"  {note}" for note in manifest.notes]
    if uses_given_split(manifest, published):
        lines.append("  split: the dataset's own (its test part kept as published)")
    else:
        lines.append(f"  split: patient-level, stratified, split_seed {split.seed}")
    return lines


def build_caches(
    manifest: Manifest,
    sizes: Sequence[int],
    preprocessing: str,
    cache_root: str | Path | None,
    skip_bad: bool,
    progress: bool,
) -> dict[int, ImageCache]:
    """A decode-once cache per size: a complete one is reused, the others built one after
    another, each on every core (a build is CPU-bound: two side by side would only share
    the same cores). Each size decodes the file itself: JPEG's DCT scaling is chosen per size
    (`retina.images`), so one decode resized to several sizes gives a smaller size pixels up
    to 5 levels off `decode_fundus`'s, which `retina.predict` feeds the exported model."""
    if progress and len(sizes) > 1:  # each build's bar names its size
        print(f"decode-once caches at {', '.join(map(str, sizes))} px: one per size, "
              "each reused if already built", file=sys.stderr)  # fmt: skip
    root = Path(cache_root) if cache_root is not None else None
    return {
        size: build_cache(
            manifest, size, preprocessing, cache_root=root, skip_bad=skip_bad, progress=progress
        )
        for size in sizes
    }


def _grade_counts(labels: np.ndarray, indices: np.ndarray) -> list[int]:
    return np.bincount(labels[indices], minlength=NUM_GRADES).astype(int).tolist()


def _check_split(
    manifest: Manifest,
    split: Split,
    *,
    skipped: int,
    val_fraction: float,
    test_fraction: float,
    published: bool = False,
) -> None:
    """RetinaError for an empty split or a grade that train lacks; message names the fix."""
    usable = sum(len(split.indices(name)) for name in SPLIT_NAMES)
    patients = len({manifest.patient_ids[i] for name in SPLIT_NAMES for i in split.indices(name)})
    lab = uses_given_split(manifest, published)
    context = (
        f"{usable} usable images of {patients} patients in {manifest.root}"
        + (f", {skipped} bad images skipped" if skipped else "")
        + f"; split_seed={split.seed}, val_fraction={val_fraction}"
        + ("" if lab else f", test_fraction={test_fraction}")
    )
    fixes = {
        "train": "add images, or lower val_fraction / test_fraction",
        "val": "add images (val needs patients of its own), or raise val_fraction",
        "test": (
            "the lab's test_img.csv must list usable images: fix or replace its bad ones"
            if lab
            else "add images (test needs patients of its own), or raise test_fraction"
        ),
    }
    for name in SPLIT_NAMES:
        if len(split.indices(name)) == 0:
            raise RetinaError(
                f"the {name} split is empty: 0 images ({context}). Fix: {fixes[name]}"
            )

    counts = {name: _grade_counts(manifest.labels, split.indices(name)) for name in SPLIT_NAMES}
    absent = [g for g in range(NUM_GRADES) if counts["train"][g] == 0]
    if absent:
        elsewhere = [g for g in absent if counts["val"][g] or counts["test"][g]]
        fix = f"add images of grade(s) {', '.join(map(str, absent))} to the data"
        if lab:
            fix += " (the lab's train_label.csv has none that are usable)"
        elif elsewhere:
            # These images sit with patients whose other eye put them in val/test.
            fix += ", or try another split seed"
        shown = "; ".join(f"{name} {counts[name]}" for name in SPLIT_NAMES)
        raise RetinaError(
            f"grade(s) {', '.join(map(str, absent))} have no image in train, so the model "
            f"cannot learn them (images per grade 0-4: {shown}; {context}). Fix: {fix}"
        )
