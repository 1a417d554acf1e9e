"""Batches for training and evaluation, sliced from the memory-mapped uint8 image cache.

Per batch: gather the rows (one `index_select` from a zero-copy tensor view of the map, into a
reused, pinned-on-CUDA uint8 buffer), copy them to the device, then on the device convert to
float, normalise with the ImageNet mean/std and (training only) flip each image horizontally
and vertically with probability 1/2. Nothing proportional to the dataset is ever allocated:
memory depends on the batch, not on N.
Used by `retina.prepare.PreparedData.loader` (e.g. through `python -m retina.train`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CUDA: host buffers in flight at once. A buffer is refilled only after its copy to the GPU has
# finished, so the CPU can gather up to this many batches ahead of the GPU.
PINNED_SLOTS = 3


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
    cannot train on it). Eval: the given order, no flips, the last partial batch kept.
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
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std == x * scale + shift: two in-place passes, no temporaries.
        self._scale = (1.0 / (255.0 * std)).to(self.device)
        self._shift = (-mean / std).to(self.device)
        self._slots: list[_Slot] = []  # allocated on first use: idle loaders cost nothing
        self._device_u8: torch.Tensor | None = None
        self._device_y: torch.Tensor | None = None
        self._x: torch.Tensor | None = None

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
        if cuda:
            self._device_u8 = torch.empty(shape, dtype=torch.uint8, device=self.device)
            self._device_y = torch.empty(self.batch_size, dtype=torch.int64, device=self.device)
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

    def __iter__(self):
        if not self._slots:
            self._allocate()
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
            yield self._batch(idx, counts, self._slots[k % len(self._slots)])

    def _batch(
        self, idx: torch.Tensor, counts: list[int] | None, slot: _Slot
    ) -> tuple[torch.Tensor, torch.Tensor]:
        size = len(idx)
        if slot.copied is not None:
            slot.copied.synchronize()  # its previous batch must have reached the GPU
        host_u8, host_y = slot.images[:size], slot.labels[:size]
        # index_select from the mapped file straight into the staging buffer: ~4x faster
        # than advanced indexing (u8[idx]) here, and no intermediate tensor.
        torch.index_select(self._images, 0, idx, out=host_u8)
        torch.index_select(self._labels, 0, idx, out=host_y)
        if slot.copied is not None:
            u8, y = self._device_u8[:size], self._device_y[:size]
            u8.copy_(host_u8, non_blocking=True)
            y.copy_(host_y, non_blocking=True)
            slot.copied.record(torch.cuda.current_stream(self.device))
        else:
            u8, y = host_u8, host_y
        x = self._x[:size]
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
        return x, y
