"""Patient-level, stratified, seeded train / val / test splits of a `Manifest`.

Both eyes of a patient always land on the same side, so a model is never tested on the other eye
of a training patient. Patients are stratified by their worst grade (the grade that decides
referral), and every split that can get a patient of a grade gets one, so rare grades 3 and 4
reach train, val and test even in tiny datasets. The same seed gives the same split in every
process (no `hash()`, patients sorted before shuffling with `numpy.random.Generator(seed)`).

`val_fraction` and `test_fraction` are shares of all patients, unless the dataset's own split
is kept: always for the lab layout, and with `published=True` (`data.split: published`) for a
layout that publishes one (IDRiD train/test, DDR train/valid/test). Its test part is then kept
as is, and so is its val part where it has one (DDR); else `val_fraction` is the share of the
patients of its train part that go to val (`test_fraction` is unused).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from retina.errors import RetinaError
from retina.manifest import Manifest

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Split:
    train: np.ndarray  # int64 indices into the manifest, sorted
    val: np.ndarray
    test: np.ndarray
    seed: int

    def indices(self, name: str) -> np.ndarray:
        if name not in SPLIT_NAMES:
            raise RetinaError(f"unknown split {name!r}; use one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)


def check_fractions(val_fraction: float, test_fraction: float, *, lab: bool = False) -> None:
    """RetinaError unless the fractions leave a non-empty share for train."""
    used = val_fraction if lab else val_fraction + test_fraction
    shown = f"val_fraction={val_fraction}" + ("" if lab else f", test_fraction={test_fraction}")
    # `not (a <= x)` also catches NaN.
    if not (0 <= val_fraction < 1) or not (0 <= test_fraction < 1) or not (used < 1):
        raise RetinaError(
            f"bad split fractions ({shown}): each must be in [0, 1) and together below 1 so that "
            "train keeps patients; use e.g. val_fraction=0.15, test_fraction=0.15"
        )


def split_by_patient(
    manifest: Manifest,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    exclude: Iterable[int] = frozenset(),
    published: bool = False,
) -> Split:
    """Split the manifest's images (minus `exclude`, e.g. skipped bad images) by patient;
    `published`: keep the dataset's own split (the lab's is always kept)."""
    lab = uses_given_split(manifest, published)
    check_fractions(val_fraction, test_fraction, lab=lab)
    n = len(manifest)
    keep = np.ones(n, dtype=bool)
    for index in exclude:
        if not 0 <= index < n:
            raise ValueError(f"exclude index {index} outside the manifest's {n} images")
        keep[index] = False
    rng = np.random.default_rng(seed)
    if not lab:
        groups = _group(manifest, np.flatnonzero(keep))
        train, val, test = _allocate(groups, manifest.labels, (val_fraction, test_fraction), rng)
        return _make_split(train, val, test, seed)

    given = np.asarray(manifest.given_split)
    test = np.flatnonzero(keep & (given == "test")).tolist()
    test_patients = {manifest.patient_ids[i] for i in test}
    groups = _group(manifest, np.flatnonzero(keep & (given == "train")))
    # A patient in both of the lab's files is the dataset's own split: keep it (the lab's test
    # set stays comparable with the course's results), but never put such a patient in val,
    # so that val at least is patient-disjoint from train and test.
    straddling = sorted(p for p in groups if p in test_patients)
    forced = [i for p in straddling for i in groups.pop(p)]
    if straddling:
        warnings.warn(
            f"{len(straddling)} patient(s) have images in both the lab's train and test parts "
            f"(e.g. {', '.join(straddling[:5])}); kept as the dataset splits them, and kept out "
            "of val",
            stacklevel=2,
        )
    if (given == "val").any():  # the dataset publishes its val part too (DDR): kept as well
        val = np.flatnonzero(keep & (given == "val")).tolist()
        train = [i for indices in groups.values() for i in indices]
        return _make_split(train + forced, val, test, seed)
    train, val, _ = _allocate(groups, manifest.labels, (val_fraction, 0.0), rng)
    return _make_split(train + forced, val, test, seed)


def uses_given_split(manifest: Manifest, published: bool) -> bool:
    """Whether the split keeps the dataset's own: the lab's always, IDRiD's or DDR's on request."""
    return manifest.given_split is not None and (published or manifest.layout == "lab")


def _group(manifest: Manifest, indices: np.ndarray) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i in indices.tolist():
        groups.setdefault(manifest.patient_ids[i], []).append(i)
    return groups


def _allocate(
    groups: dict[str, list[int]],
    labels: np.ndarray,
    fractions: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[list[int], list[int], list[int]]:
    """Image indices of train, val, test: each stratum (worst grade) shuffled and cut by counts."""
    val_fraction, test_fraction = fractions
    shares = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    strata: dict[int, list[str]] = {}
    for patient in sorted(groups):  # sorted: the order (and so the split) must not depend on
        worst = int(labels[groups[patient]].max())  # the CSV's row order or on the process
        strata.setdefault(worst, []).append(patient)
    sides: tuple[list[int], list[int], list[int]] = ([], [], [])
    debt = [0.0, 0.0, 0.0]  # patients each split is owed so far: breaks ties between strata
    for grade in sorted(strata):
        patients = strata[grade]
        order = rng.permutation(len(patients))
        counts = _stratum_counts(len(patients), shares, debt)
        start = 0
        for side, count in enumerate(counts):
            debt[side] += len(patients) * shares[side] - count
            for k in order[start : start + count]:
                sides[side].extend(groups[patients[k]])
            start += count
    return sides


def _stratum_counts(n: int, shares: tuple[float, float, float], debt: list[float]) -> list[int]:
    """How many of a stratum's n patients go to train, val, test.

    First one patient to each split with a positive share, train first (a grade missing from
    train cannot be learnt), then the larger of val/test; then the rest one by one to the split
    furthest below its share. So small strata reach every split they can, large ones follow the
    shares to within one patient. Ties go to the split the earlier strata left shortest (two
    2-patient strata: one sends its second patient to val, the other to test).
    """
    counts = [0, 0, 0]
    for side in sorted(range(3), key=lambda s: (s != 0, -shares[s], -debt[s], s)):
        if shares[side] > 0 and sum(counts) < n:
            counts[side] = 1
    for _ in range(n - sum(counts)):
        side = max(range(3), key=lambda s: (n * shares[s] - counts[s], debt[s], -s))
        counts[side] += 1
    return counts


def _make_split(train: list[int], val: list[int], test: list[int], seed: int) -> Split:
    def arr(xs: list[int]) -> np.ndarray:
        return np.sort(np.asarray(xs, dtype=np.int64))

    return Split(train=arr(train), val=arr(val), test=arr(test), seed=seed)
