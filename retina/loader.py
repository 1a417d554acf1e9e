"""Batches for training and evaluation, sliced from the memory-mapped uint8 image cache.

Per batch: gather the rows into a reused (pinned on CUDA) uint8 buffer, copy them to the
device, then on the device convert to float, normalise with the ImageNet mean/std and
(training only) flip each image horizontally and vertically with probability 1/2, into a
reused float buffer. Nothing proportional to the dataset is ever allocated: memory depends on
the batch, not on N.

Rows of a cache file (`ImageCache.open()`, a .npy mapped by np.load) are gathered with
positioned reads (`os.preadv`) instead of through the map: pages read through a map count
toward the process's RSS, so a trial mapping a 20 GB cache would grow by every page an epoch
touches; read() copies from the page cache without mapping anything (and, unlike a
multi-threaded `index_select` on the map, never stalls on page faults or idle OpenMP threads).
Other arrays are gathered with `index_select`. On CUDA a background thread gathers batch k+1
and copies it to the GPU on a side stream while the GPU computes batch k.
With `augment="fundus"` a training batch is then rotated, zoomed and colour-jittered on the
device (`retina.augment`), from parameters drawn once per epoch from (seed, epoch).
Used by `retina.prepare.PreparedData.loader` (e.g. through `python -m retina.train`).
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from retina.augment import build_augment
from retina.errors import RetinaError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CUDA: host buffers in flight at once. A buffer is refilled only after its copy to the GPU has
# finished, so the CPU can gather up to this many batches ahead of the GPU.
PINNED_SLOTS = 3


def normalisation_affine(
    mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), float32 [1, 3, 1, 1], with (x / 255 - mean) / std == x * scale + shift.

    Two in-place passes and no temporaries. Training, evaluation and `retina.predict` all
    normalise with these tensors, so a pixel becomes the same float everywhere.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit generator seed from (seed, epoch): nearby pairs give unrelated orders."""
    state = np.random.SeedSequence([seed % 2**63, epoch % 2**63]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _tensor_view(images: np.ndarray) -> torch.Tensor:
    """A tensor sharing `images`' memory (a read-only map): no copy, nothing read yet."""
    with warnings.catch_warnings():
        # torch warns that writing through the tensor would be undefined; we only ever read.
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        return torch.from_numpy(images)


def _npy_file(images: np.ndarray) -> tuple[str, int] | None:
    """(path, byte offset of row 0) when `images` maps a whole .npy file (np.load(mmap_mode=)),
    so rows can be read from the file directly; None for anything else (then: index_select)."""
    path = getattr(images, "filename", None)
    if not isinstance(images, np.memmap) or not path or not images.flags.c_contiguous:
        return None
    if not hasattr(os, "preadv"):  # not on every OS
        return None
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}  # fmt: skip
    try:
        with open(path, "rb") as fh:
            read_header = readers.get(np.lib.format.read_magic(fh))
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
    except (OSError, ValueError):
        return None
    # The same shape, layout and start as the file's array: the map is the whole array, not a
    # slice of it (a slice keeps its parent's offset attribute but not its shape).
    if tuple(shape) != images.shape or fortran or dtype != np.uint8 or offset != images.offset:
        return None
    return path, offset


def _read_rows(fd: int, path: str, base: int, idx: np.ndarray, out: np.ndarray) -> None:
    """out[j] = row idx[j] of the .npy file open as `fd`; a run of consecutive rows is one read."""
    n = len(idx)
    flat = out.reshape(n, -1)
    row_bytes = flat.shape[1]
    cuts = (np.flatnonzero(np.diff(idx) != 1) + 1).tolist()
    for start, end in zip([0, *cuts], [*cuts, n], strict=True):
        view = memoryview(flat[start:end]).cast("B")
        position, done = base + int(idx[start]) * row_bytes, 0
        while done < len(view):  # a regular file reads short only at its end
            got = os.preadv(fd, [view[done:]], position + done)
            if got == 0:
                raise RetinaError(
                    f"cache file {path} ends before row {int(idx[start])}: it was truncated; "
                    "delete its folder and run again to rebuild the cache"
                )
            done += got


@dataclass
class _Slot:
    """Host-side staging buffers for one batch, and the event that says they are free again."""

    images: torch.Tensor  # uint8 [B, 3, S, S]
    labels: torch.Tensor  # int64 [B]
    copied: torch.cuda.Event | None  # CUDA: recorded after the copies to the device


class BatchLoader:
    """Iterates (x float32 [B,3,S,S] normalised on `device`, y int64 [B] on `device`).

    Train: a fresh permutation and fresh flips per epoch from (seed, epoch) - call
    `set_epoch(epoch)` before each epoch - and a last batch of one image is dropped (BatchNorm
    cannot train on it). `augment="fundus"` adds a rotation, zoom and colour per training image
    (`retina.augment`; "flips", the default, is flips alone). Eval: the given order, no flips,
    no augmentation, the last partial batch kept.
    x and y live in buffers reused for the next batch: use them before asking for the next one
    (as a training step does) or `.clone()` them to keep them.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray,
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        seed: int = 0,
        augment: str = "flips",
    ) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 [N, 3, S, S], got {images.dtype} {images.shape}"
            )
        if len(labels) != images.shape[0]:
            raise ValueError(f"{len(labels)} labels for {images.shape[0]} images")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= images.shape[0]):
            raise ValueError(f"indices must lie in [0, {images.shape[0]})")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self._epoch = 0
        augmenter = build_augment(augment)  # checked here, so a typo fails at once
        self._augment = augmenter if self.train else None  # evaluation never augments
        self._file = _npy_file(images)  # rows read with preadv when set
        self._images = _tensor_view(images)
        self._labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self._indices = torch.from_numpy(idx.copy())
        n, b = len(idx), self.batch_size
        if self.train:
            self._num_batches = n // b + (1 if n % b >= 2 else 0)
            self.num_images = n - 1 if n % b == 1 else n  # images one epoch yields
        else:
            self._num_batches = math.ceil(n / b)
            self.num_images = n
        scale, shift = normalisation_affine()
        self._scale, self._shift = scale.to(self.device), shift.to(self.device)
        # float32 scalars per channel for the CPU path (numpy keeps float32 arithmetic).
        self._scale_np = scale.numpy().reshape(3)
        self._shift_np = shift.numpy().reshape(3)
        self._slots: list[_Slot] = []  # allocated on first use: idle loaders cost nothing
        self._device_u8: list[torch.Tensor] = []  # CUDA: two, so copy k+1 overlaps compute k
        self._device_y: list[torch.Tensor] = []
        self._x: torch.Tensor | None = None
        self._copier: torch.cuda.Stream | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and flips the next iteration uses (train only)."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return self._num_batches

    def _allocate(self) -> None:
        cuda = self.device.type == "cuda"
        shape = (self.batch_size, *self._images.shape[1:])
        for _ in range(PINNED_SLOTS if cuda else 1):
            self._slots.append(
                _Slot(
                    images=torch.empty(shape, dtype=torch.uint8, pin_memory=cuda),
                    labels=torch.empty(self.batch_size, dtype=torch.int64, pin_memory=cuda),
                    copied=torch.cuda.Event() if cuda else None,
                )
            )
        # One copy stream for the loader's life: copies of an epoch abandoned midway stay
        # ordered before the next epoch's copies into the same device buffers.
        self._copier = torch.cuda.Stream(self.device) if cuda else None
        for _ in range(2 if cuda else 0):
            self._device_u8.append(torch.empty(shape, dtype=torch.uint8, device=self.device))
            self._device_y.append(
                torch.empty(self.batch_size, dtype=torch.int64, device=self.device)
            )
        # channels_last is what cuDNN convolutions run fastest on; on CPU it slows the copy.
        fmt = torch.channels_last if cuda else torch.contiguous_format
        self._x = torch.empty(shape, dtype=torch.float32, device=self.device, memory_format=fmt)

    def _epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image index per position, flip code per position or None): 1 = h, 2 = v, 3 = both."""
        if not self.train:
            return self._indices, None
        gen = torch.Generator().manual_seed(_epoch_seed(self.seed, self._epoch))
        n = len(self._indices)
        order = self._indices[torch.randperm(n, generator=gen)]
        codes = torch.randint(0, 4, (n,), generator=gen)  # two fair, independent coin flips
        return order, codes

    def _augment_plan(self) -> torch.Tensor | None:
        """This epoch's augmentation parameters per batch position, on the device (or None)."""
        if self._augment is None:
            return None
        return self._augment.draw(self.seed, self._epoch, len(self._indices), self.device)

    def _augmented(self, x: torch.Tensor, plan: torch.Tensor | None, k: int) -> torch.Tensor:
        """Batch k augmented: its position j takes row k * batch_size + j of the plan."""
        rows = None if plan is None else plan[k * self.batch_size :][: len(x)]
        return x if rows is None else self._augment(x, rows, self._scale, self._shift)

    def _batches(self):
        """(row indices, images per flip code or None) of each batch of this epoch."""
        order, codes = self._epoch_plan()
        n_rows = self._images.shape[0]
        for k in range(self._num_batches):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            counts = None
            if codes is not None:
                code = codes[k * self.batch_size : (k + 1) * self.batch_size]
                # Sort by (flip code, row): rows are read in file order, and each flip code
                # becomes one contiguous run that is flipped in one call (no boolean masks).
                ranked = torch.argsort(code * n_rows + idx)
                idx, code = idx[ranked], code[ranked]
                counts = torch.bincount(code, minlength=4).tolist()
            yield idx, counts

    def __iter__(self):
        if not self._slots:
            self._allocate()
        fd = os.open(self._file[0], os.O_RDONLY) if self._file else None
        try:
            if self.device.type == "cuda":
                yield from self._iter_cuda(fd)
            else:
                slot = self._slots[0]
                plan = self._augment_plan()
                for k, (idx, counts) in enumerate(self._batches()):
                    host_u8, host_y = self._gather(idx, slot, fd)
                    yield self._augmented(self._convert(host_u8, counts), plan, k), host_y
        finally:
            if fd is not None:
                os.close(fd)

    def _gather(self, idx: torch.Tensor, slot: _Slot, fd: int | None):
        """Rows `idx` of the images and labels into the slot's host buffers (views returned)."""
        size = len(idx)
        host_u8, host_y = slot.images[:size], slot.labels[:size]
        if fd is not None:
            _read_rows(fd, self._file[0], self._file[1], idx.numpy(), host_u8.numpy())
        else:
            # index_select straight into the staging buffer: ~4x faster than advanced
            # indexing (u8[idx]) here, and no intermediate tensor.
            torch.index_select(self._images, 0, idx, out=host_u8)
        torch.index_select(self._labels, 0, idx, out=host_y)
        return host_u8, host_y

    def _convert(self, u8: torch.Tensor, counts: list[int] | None) -> torch.Tensor:
        """u8 (on the device) -> the normalised float buffer, flipping each run of `counts`."""
        size = len(u8)
        x = self._x[:size]
        if self.device.type == "cpu":
            return self._convert_numpy(u8, x, counts)
        if counts is None:
            x.copy_(u8)
        else:
            start = 0
            for code, count in enumerate(counts):
                dims = [d for bit, d in ((1, 3), (2, 2)) if code & bit]  # 1: width, 2: height
                src = u8[start : start + count]
                # Flip the uint8 run (4x fewer bytes than float), converting while copying.
                x[start : start + count].copy_(src.flip(dims) if dims and count else src)
                start += count
        x.mul_(self._scale).add_(self._shift)
        return x

    def _convert_numpy(
        self, u8: torch.Tensor, x: torch.Tensor, counts: list[int] | None
    ) -> torch.Tensor:
        """The CPU conversion in numpy, on this thread: a flip is a reversed view read while
        converting (no temporary), and no op wakes torch's thread pool - small parallel ops
        pay its wake-up on every call, which on a busy machine costs more than the work.
        One channel plane at a time, so the add finds the plane the multiply wrote in cache."""
        src, dst = u8.numpy(), x.numpy()
        codes = (
            [0] * len(src)
            if counts is None
            else [c for c, n in enumerate(counts) for _ in range(n)]
        )
        for i, code in enumerate(codes):
            image = src[i]
            if code & 1:
                image = image[:, :, ::-1]  # horizontal: reverse the width
            if code & 2:
                image = image[:, ::-1, :]  # vertical: reverse the height
            for c in range(3):  # the same float32 ops as torch's mul_/add_: identical values
                np.multiply(image[c], self._scale_np[c], out=dst[i, c])
                np.add(dst[i, c], self._shift_np[c], out=dst[i, c])
        return x

    def _iter_cuda(self, fd: int | None):
        """One batch ahead: a thread gathers batch k+1 and copies it to the GPU on a side stream
        while the GPU computes batch k; the compute stream waits for that copy's event only.

        Device buffers alternate between even and odd batches. The copy into a buffer waits for
        an event the compute stream records after the step that last used it, so it never
        overwrites images or labels still being read.
        """
        compute = torch.cuda.current_stream(self.device)
        copier = self._copier
        released = torch.cuda.Event()
        released.record(compute)  # after everything queued before this epoch
        batches = enumerate(self._batches())
        plan, k = self._augment_plan(), 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-loader") as pool:
            pending = self._submit(pool, batches, released, copier, fd)
            while pending is not None:
                u8, y, counts, copied = pending.result()
                compute.wait_event(copied)
                x = self._augmented(self._convert(u8, counts), plan, k)
                k += 1
                # Recorded after batch k's conversion and after step k-1 (queued before it):
                # batch k+1's copy reuses batch k-1's device buffers only once both are done.
                released = torch.cuda.Event()
                released.record(compute)
                pending = self._submit(pool, batches, released, copier, fd)
                yield x, y

    def _submit(self, pool, batches, released, copier, fd) -> Future | None:
        nxt = next(batches, None)
        if nxt is None:
            return None
        k, (idx, counts) = nxt
        return pool.submit(self._stage, k, idx, counts, released, copier, fd)

    def _stage(self, k: int, idx, counts, released, copier, fd):
        """Worker thread: gather batch k into a pinned slot, queue its copy on `copier`."""
        slot = self._slots[k % len(self._slots)]
        slot.copied.synchronize()  # the slot's previous batch must have reached the GPU
        host_u8, host_y = self._gather(idx, slot, fd)
        size = len(idx)
        u8, y = self._device_u8[k % 2][:size], self._device_y[k % 2][:size]
        with torch.cuda.stream(copier):
            copier.wait_event(released)
            u8.copy_(host_u8, non_blocking=True)
            y.copy_(host_y, non_blocking=True)
            slot.copied.record(copier)
        return u8, y, counts, slot.copied
