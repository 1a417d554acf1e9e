"""BatchLoader: exact normalisation and flips, seeded order, coverage, and no copy of the dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retina.loader import IMAGENET_MEAN, IMAGENET_STD, BatchLoader

CPU = torch.device("cpu")
MEAN = np.asarray(IMAGENET_MEAN).reshape(1, 3, 1, 1)
STD = np.asarray(IMAGENET_STD).reshape(1, 3, 1, 1)


def random_images(n: int, size: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Undo the normalisation (exactly: the values are k/255 steps apart)."""
    return np.rint((x.astype(np.float64) * STD + MEAN) * 255).astype(np.int64)


def run_epoch(loader: BatchLoader) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in loader:  # x and y are reused buffers: copy them out before the next batch
        xs.append(x.cpu().numpy().copy())
        ys.append(y.cpu().numpy().copy())
    return np.concatenate(xs), np.concatenate(ys)


def test_normalisation_on_known_pixels():
    images = np.zeros((3, 3, 2, 2), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    images[2, 0], images[2, 1], images[2, 2] = 10, 128, 200
    labels = np.array([4, 0, 2])
    loader = BatchLoader(images, labels, np.arange(3), 2, CPU, train=False)
    x, y = run_epoch(loader)
    assert x.dtype == np.float32 and x.shape == (3, 3, 2, 2)
    expected = (images.astype(np.float64) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(x, expected, rtol=0, atol=2e-6)
    np.testing.assert_allclose(x[0, :, 0, 0], [-2.117904, -2.035714, -1.804444], atol=1e-5)
    np.testing.assert_allclose(x[1, :, 0, 0], [2.248908, 2.428571, 2.64], atol=1e-5)
    np.testing.assert_array_equal(y, labels)


def test_train_flips_are_exact_flips_and_all_four_occur():
    n = 256
    images = random_images(n, size=5)
    loader = BatchLoader(images, np.arange(n), np.arange(n), 32, CPU, train=True, seed=3)
    x, y = run_epoch(loader)
    kinds = []
    for sample, index in zip(to_uint8(x), y, strict=True):
        src = images[index].astype(np.int64)
        candidates = {
            "none": src,
            "h": src[:, :, ::-1],
            "v": src[:, ::-1, :],
            "hv": src[:, ::-1, ::-1],
        }
        matches = [k for k, c in candidates.items() if np.array_equal(sample, c)]
        assert len(matches) == 1, f"sample of image {index} is no exact flip of it"
        kinds.append(matches[0])
    counts = {k: kinds.count(k) for k in ("none", "h", "v", "hv")}
    assert all(40 <= c <= 90 for c in counts.values()), counts  # each p = 1/4; n = 256


def test_eval_does_not_flip_and_keeps_the_given_order():
    images = random_images(10)
    indices = np.array([7, 2, 9, 0, 5, 1])
    loader = BatchLoader(images, np.arange(10) * 10, indices, 4, CPU, train=False)
    assert len(loader) == 2 and loader.num_images == 6
    for _ in range(2):  # stable across passes
        x, y = run_epoch(loader)
        np.testing.assert_array_equal(y, indices * 10)
        np.testing.assert_array_equal(to_uint8(x), images[indices])


def test_every_index_once_per_epoch_and_reshuffled_by_epoch():
    n = 50
    images = random_images(n)
    indices = np.sort(np.random.default_rng(0).choice(n, 30, replace=False))  # 30 = 3*8 + 6
    loader = BatchLoader(images, np.arange(n), indices, 8, CPU, train=True, seed=1)
    orders = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        batches = [y.clone() for _, y in loader]
        assert all(len(b) == 8 for b in batches[:-1])
        order = torch.cat(batches).numpy()
        assert sorted(order) == sorted(indices)  # each exactly once
        assert all(np.all(np.diff(b.numpy()) != 0) for b in batches)
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])


def test_same_seed_same_batches_other_seed_other_batches():
    images, n = random_images(40), 40

    def epoch_of(seed: int, epoch: int):
        loader = BatchLoader(images, np.arange(n), np.arange(n), 16, CPU, train=True, seed=seed)
        loader.set_epoch(epoch)
        return run_epoch(loader)

    a, b = epoch_of(7, 2), epoch_of(7, 2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(epoch_of(8, 2)[1], a[1])
    assert not np.array_equal(epoch_of(7, 3)[1], a[1])


@pytest.mark.parametrize("n,batch,train_batches,eval_batches", [(9, 4, 2, 3), (10, 4, 3, 3)])
def test_last_batch_of_one_is_dropped_in_training_only(n, batch, train_batches, eval_batches):
    images = random_images(n)
    train = BatchLoader(images, np.zeros(n), np.arange(n), batch, CPU, train=True)
    evaluation = BatchLoader(images, np.zeros(n), np.arange(n), batch, CPU, train=False)
    assert len(train) == train_batches and len(list(train)) == train_batches
    assert train.num_images == (n - 1 if n % batch == 1 else n)
    assert len(evaluation) == eval_batches and evaluation.num_images == n
    sizes = [len(y) for _, y in evaluation]
    assert sum(sizes) == n and sizes[-1] == n - batch * (eval_batches - 1)


def test_batches_come_from_a_memory_map_without_copying_it(tmp_path):
    # 20,000 images at 64 px: a 245 MB sparse file. Reading one epoch's first batches must not
    # bring the whole array into the process.
    path = tmp_path / "images.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(20_000, 3, 64, 64))
    big[123] = 255
    del big
    images = np.load(path, mmap_mode="r")

    def rss_bytes() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    before = rss_bytes()
    loader = BatchLoader(images, np.zeros(20_000), np.arange(20_000), 16, CPU, train=True)
    for k, _batch in enumerate(loader):
        if k == 4:
            break
    assert rss_bytes() - before < 60 * 2**20
    only = BatchLoader(images, np.zeros(20_000), np.array([123]), 1, CPU, train=False)
    x, _ = next(iter(only))
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), (1 - MEAN.ravel()) / STD.ravel(), atol=1e-5)


def test_rejects_inputs_that_are_not_a_uint8_cache():
    with pytest.raises(ValueError, match="uint8"):
        BatchLoader(
            np.zeros((2, 3, 4, 4), np.float32), np.zeros(2), np.arange(2), 1, CPU, train=False
        )
    with pytest.raises(ValueError, match="indices"):
        BatchLoader(random_images(2), np.zeros(2), np.array([5]), 1, CPU, train=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches():
    images, n = random_images(70, size=8), 70
    for train in (True, False):
        cpu = BatchLoader(images, np.arange(n), np.arange(n), 16, CPU, train=train, seed=5)
        gpu = BatchLoader(
            images, np.arange(n), np.arange(n), 16, torch.device("cuda"), train=train, seed=5
        )
        for epoch in range(2):
            cpu.set_epoch(epoch)
            gpu.set_epoch(epoch)
            for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
                assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
                torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-6)
                assert torch.equal(yg.cpu(), yc)
