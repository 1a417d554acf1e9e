"""Grade image files with a loaded model, streaming: decode, batch, forward, decode overlapped.

No command of its own: `python -m retina.predict` (the CLI) and `python -m retina.bench`
(`predict_efficiency`) call `grade_files`. Every file goes through `retina.images.decode_fundus`,
the very function the decode-once cache runs, then `retina.loader.normalisation_affine`, the
normalisation of training and evaluation: the model sees the pixels it was trained on.
With `views` > 1 each batch is graded as the study's tests grade it: the outputs of that many
dihedral views averaged (`retina.tta`; by default the model file's `tta`).

On the CPU the machine's cores are split into `workers` lanes, threads of this process that
each decode a batch and run the model on it with its share of torch's threads: while one lane
runs the model, another decodes (PIL and torch release the GIL), and a forward pass on one or
two threads wastes less on synchronisation than one spread over every core, which pays for
the decoding (`python -m retina.bench`'s `predict_efficiency`). On a GPU, worker processes
decode chunks of files while the main process runs the model on the batch before. Either way
at most a few batches are in memory, whatever the number of files. A file that cannot be
decoded gets its reason and no probabilities; the others are graded.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from retina.engine import autocast_dtype
from retina.errors import RetinaError
from retina.heads import grades_of, scores_of
from retina.images import BadImage, decode_fundus
from retina.loader import normalisation_affine
from retina.metrics import NUM_CLASSES
from retina.model_file import LoadedModel
from retina.pools import pool_context
from retina.tta import with_views

MAX_CHUNK = 16  # files per worker task: large enough to amortise the round trip
MAX_LANES = 8  # CPU lanes: beyond, the forward passes on one thread each gain little


@dataclass
class Graded:
    """Per file, in input order: probabilities of grades 0-4 (NaN rows where it failed, and
    everywhere for a regress head), the reason it failed (None where it was graded), the
    score (expected grade, or a regress head's output; NaN where it failed) and the grade
    (-1 where it failed), graded as evaluation grades (`retina.heads`)."""

    probs: np.ndarray  # float32 [N, 5]
    errors: list[str | None]
    scores: np.ndarray | None = None  # float32 [N]
    grades: np.ndarray | None = None  # int64 [N]

    @property
    def ok(self) -> np.ndarray:
        if self.scores is None:  # built from probabilities alone
            return ~np.isnan(self.probs[:, 0])
        return ~np.isnan(self.scores)


def _decode_chunk(task: tuple[int, list[str], int, str]) -> tuple[int, np.ndarray, list]:
    """Worker: decode paths into uint8 [k, 3, S, S]; returns (start, rows, [(offset, reason)])."""
    start, paths, size, preprocessing = task
    rows = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    bad = []
    for offset, path in enumerate(paths):
        try:
            rows[offset] = decode_fundus(Path(path), size, preprocessing)[0]
        except BadImage as exc:
            bad.append((offset, str(exc)))
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop the others
            bad.append((offset, f"cannot decode: {type(exc).__name__}: {exc}"))
    return start, rows, bad


def decoded_chunks(
    paths: Sequence[Path], size: int, preprocessing: str, *, workers: int, chunk: int, ahead: int
) -> Iterator[tuple[int, np.ndarray, list]]:
    """(start index, uint8 rows, bad files) per chunk of `paths`, in order.

    With more than one worker, at most `ahead` chunks are in flight: decoding runs ahead of
    the caller by that much and no further (flat memory on a folder of any size).
    """
    tasks = (
        (i, [str(p) for p in paths[i : i + chunk]], size, preprocessing)
        for i in range(0, len(paths), chunk)
    )
    if workers <= 1:
        yield from map(_decode_chunk, tasks)  # no pool: nothing to start for one core
        return
    try:
        # fork, as the cache build: workers run PIL and numpy only, never torch.
        with ProcessPoolExecutor(workers, mp_context=pool_context()) as pool:
            pending = deque(pool.submit(_decode_chunk, t) for t in itertools.islice(tasks, ahead))
            while pending:
                done = pending.popleft().result()
                pending.extend(pool.submit(_decode_chunk, t) for t in itertools.islice(tasks, 1))
                yield done
    except BrokenProcessPool:
        raise RetinaError(
            "a decoding worker died (out of memory?); run again with fewer --workers "
            "or a smaller --batch-size"
        ) from None


class _Batcher:
    """Collects decoded rows into one reused uint8 batch and grades it when full."""

    def __init__(
        self, loaded: LoadedModel, batch_size: int, device: torch.device, n: int, views: int = 1,
        into: _Batcher | None = None,
    ):  # fmt: skip
        """`into`: write the results into that batcher's arrays (one per lane, results shared)."""
        size = loaded.image_size
        self.loaded, self.device = loaded, device
        self.network = with_views(loaded.model, views)
        self.u8 = torch.empty((batch_size, 3, size, size), dtype=torch.uint8)
        self.index = np.empty(batch_size, dtype=np.int64)
        self.filled = 0
        scale, shift = normalisation_affine(loaded.mean, loaded.std)
        self.scale, self.shift = scale.to(device), shift.to(device)
        self.amp = autocast_dtype(device)
        if into is not None:  # each lane fills rows of its own: no two write one row
            self.probs, self.scores, self.grades = into.probs, into.scores, into.grades
            return
        self.probs = np.full((n, NUM_CLASSES), np.nan, dtype=np.float32)
        self.scores = np.full(n, np.nan, dtype=np.float32)
        self.grades = np.full(n, -1, dtype=np.int64)

    def add(self, index: int, row: np.ndarray) -> None:
        self.u8[self.filled] = torch.from_numpy(row)
        self.index[self.filled] = index
        self.filled += 1
        if self.filled == len(self.index):
            self.flush()

    def inputs(self) -> torch.Tensor:
        """The batch as the model gets it: float32 on the device, normalised as in training."""
        x = self.u8[: self.filled].to(self.device, non_blocking=True).float()
        return x.mul_(self.scale).add_(self.shift)

    def flush(self) -> None:
        if not self.filled:
            return
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None),
        ):
            logits = self.network(self.inputs())  # with views: log of the mean softmax
        rows = self.index[: self.filled]
        if logits.shape[1] > 1:  # a regress head has no probabilities: its rows stay NaN
            self.probs[rows] = torch.softmax(logits.float(), dim=1).cpu().numpy()
        self.scores[rows] = scores_of(logits).cpu().numpy()
        self.grades[rows] = grades_of(logits, self.loaded.thresholds).cpu().numpy()
        self.filled = 0


def grade_files(
    loaded: LoadedModel,
    paths: Sequence[Path],
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    workers: int = 2,
    progress: bool = False,
    views: int | None = None,
) -> Graded:
    """Probabilities of grades 0-4 for every file in `paths`; bad files get their reason.
    `views`: dihedral views averaged per image (`retina.tta`); None: the model file's `tta`."""
    device = torch.device(device)
    n = len(paths)
    errors: list[str | None] = [None] * n
    views = loaded.tta if views is None else views
    if device.type == "cpu" and workers > 1:
        return _grade_in_lanes(loaded, paths, batch_size, workers, progress, views)
    batcher = _Batcher(loaded, batch_size, device, n, views)
    chunk = max(1, min(MAX_CHUNK, math.ceil(batch_size / (2 * max(workers, 1)))))
    # One batch plus a chunk per worker in flight: the workers never wait for the model.
    ahead = math.ceil(batch_size / chunk) + 2 * workers
    chunks = decoded_chunks(
        paths, loaded.image_size, loaded.preprocessing, workers=workers, chunk=chunk, ahead=ahead
    )
    # disable=None: a bar in a terminal, nothing in a pipe or a log file.
    with tqdm(
        total=n, unit="img", desc="grading", file=sys.stderr, disable=None if progress else True
    ) as bar:
        for start, rows, bad in chunks:
            failed = {offset for offset, _ in bad}
            for offset, reason in bad:
                errors[start + offset] = reason
            for offset, row in enumerate(rows):
                if offset not in failed:
                    batcher.add(start + offset, row)
            bar.update(len(rows))
        batcher.flush()
    return Graded(probs=batcher.probs, errors=errors, scores=batcher.scores, grades=batcher.grades)


def _grade_in_lanes(
    loaded: LoadedModel, paths: Sequence[Path], batch_size: int, lanes: int, progress: bool,
    views: int,
) -> Graded:  # fmt: skip
    """The CPU path: `lanes` threads, each taking the next batch_size / lanes files, decoding
    them and running the model on them with its share of torch's threads (so the images in
    memory are one batch's, whatever the number of lanes)."""
    n, cpu = len(paths), torch.device("cpu")
    errors: list[str | None] = [None] * n
    threads = torch.get_num_threads()
    lanes = max(1, min(lanes, threads, MAX_LANES, n))
    batch_size = max(1, math.ceil(batch_size / lanes))
    first = _Batcher(loaded, batch_size, cpu, n, views)
    starts = iter(range(0, n, batch_size))
    lock = threading.Lock()  # hands out batches, and guards the progress bar
    size, preprocessing = loaded.image_size, loaded.preprocessing

    def lane(batcher: _Batcher) -> None:
        while True:
            with lock:
                start = next(starts, None)
            if start is None:
                return
            for i in range(start, min(start + batch_size, n)):
                try:
                    batcher.add(i, decode_fundus(Path(paths[i]), size, preprocessing)[0])
                except BadImage as exc:
                    errors[i] = str(exc)
                except Exception as exc:  # noqa: BLE001 - one odd file must not stop the others
                    errors[i] = f"cannot decode: {type(exc).__name__}: {exc}"
            batcher.flush()
            with lock:
                bar.update(min(batch_size, n - start))

    batchers = [first] + [
        _Batcher(loaded, batch_size, cpu, n, views, into=first) for _ in range(lanes - 1)
    ]
    torch.set_num_threads(max(1, threads // lanes))  # the lanes share the cores, not each all
    try:
        with (
            tqdm(total=n, unit="img", desc="grading", file=sys.stderr,
                 disable=None if progress else True) as bar,
            ThreadPoolExecutor(lanes, thread_name_prefix="grading-lane") as pool,
        ):  # fmt: skip
            for done in [pool.submit(lane, b) for b in batchers]:
                done.result()
    finally:
        torch.set_num_threads(threads)
    return Graded(probs=first.probs, errors=errors, scores=first.scores, grades=first.grades)
