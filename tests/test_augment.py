"""The fundus augmentation: exact geometry through the one affine path, bounded colour, and
batches reproducible from (seed, epoch) through the real BatchLoader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retina.augment import AUGMENTS, FundusAugment, build_augment, rotation_theta, warp
from retina.errors import RetinaError
from retina.loader import BatchLoader, normalisation_affine

CPU = torch.device("cpu")


def images(n: int, size: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def epoch(loader: BatchLoader, number: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader.set_epoch(number)
    xs, ys = zip(*((x.clone(), y.clone()) for x, y in loader), strict=True)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("k", [1, -1, 2])
def test_a_rotation_by_quarter_turns_is_the_dihedral_view(k):
    x = torch.rand(3, 3, 10, 10)
    theta = rotation_theta(torch.full((3,), k * math.pi / 2), torch.ones(3))
    # Pixel centres land on pixel centres: only float rounding of cos/sin remains.
    torch.testing.assert_close(warp(x, theta), torch.rot90(x, k, dims=(2, 3)), rtol=0, atol=1e-5)


def test_no_rotation_and_no_zoom_is_the_identity():
    x = torch.rand(2, 3, 7, 7)
    torch.testing.assert_close(warp(x, rotation_theta(torch.zeros(2), torch.ones(2))), x)


def test_parameters_lie_in_their_ranges_and_come_from_seed_and_epoch():
    augment = FundusAugment()
    p = augment.draw(seed=3, epoch=1, n=2000, device=CPU)
    angle, zoom, brightness, contrast = p.unbind(1)
    assert 0 <= angle.min() and angle.max() < 2 * math.pi and angle.max() > 6.0  # all around
    for values in (zoom, brightness, contrast):
        assert 0.9 <= values.min() < 0.91 and 1.09 < values.max() <= 1.1
    assert torch.equal(p, augment.draw(seed=3, epoch=1, n=2000, device=CPU))
    assert not torch.equal(p, augment.draw(seed=3, epoch=2, n=2000, device=CPU))
    assert not torch.equal(p, augment.draw(seed=4, epoch=1, n=2000, device=CPU))


def test_colour_stays_in_the_pixel_range_and_outside_is_black():
    scale, shift = normalisation_affine()
    white = torch.full((1, 3, 16, 16), 255.0) * scale + shift
    # 45 degrees, no zoom: the corners sample outside the square; brightness +10 %.
    params = torch.tensor([[math.pi / 4, 1.0, 1.1, 1.0]])
    out = FundusAugment()(white, params, scale, shift)
    pixels = (out - shift) / scale
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3  # clamped, like ColorJitter
    assert pixels[0, :, 0, 0].abs().max() < 1e-3  # a corner: black, the fundus background
    torch.testing.assert_close(pixels[0, :, 8, 8], torch.full((3,), 255.0))  # centre: clamped


def test_fundus_loader_same_seed_same_batches_other_epoch_other_batches():
    data, labels = images(40), np.arange(40) % 5

    def make(seed: int, augment: str = "fundus") -> BatchLoader:
        return BatchLoader(data, labels, np.arange(40), 8, CPU, train=True, seed=seed, augment=augment)  # fmt: skip

    x1, y1 = epoch(make(0), 1)
    x1_again, y1_again = epoch(make(0), 1)  # a fresh loader, as in a rerun
    x2, _ = epoch(make(0), 2)
    torch.testing.assert_close(x1, x1_again, rtol=0, atol=0)
    assert torch.equal(y1, y1_again)
    assert not torch.allclose(x1, x2)
    assert not torch.allclose(x1, epoch(make(1), 1)[0])
    # The shuffle and flips are the loader's own: the same labels in the same order as flips.
    x_flips, y_flips = epoch(make(0, "flips"), 1)
    assert torch.equal(y1, y_flips) and not torch.allclose(x1, x_flips)


def test_evaluation_never_augments_and_unknown_names_fail():
    data, labels = images(10), np.arange(10) % 5
    plain = BatchLoader(data, labels, np.arange(10), 4, CPU, train=False)
    fundus = BatchLoader(data, labels, np.arange(10), 4, CPU, train=False, augment="fundus")
    torch.testing.assert_close(epoch(plain, 1)[0], epoch(fundus, 1)[0], rtol=0, atol=0)
    assert build_augment("flips") is None and AUGMENTS == ("flips", "fundus")
    with pytest.raises(RetinaError, match="unknown augment 'rotate'; choose one of: flips, fundus"):
        BatchLoader(data, labels, np.arange(10), 4, CPU, train=True, augment="rotate")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fundus_batches_match_cpu_batches():
    data, labels = images(24, size=32), np.arange(24) % 5
    cpu = BatchLoader(data, labels, np.arange(24), 8, CPU, train=True, seed=5, augment="fundus")
    gpu = BatchLoader(data, labels, np.arange(24), 8, torch.device("cuda"), train=True, seed=5,
                      augment="fundus")  # fmt: skip
    (xc, yc), (xg, yg) = epoch(cpu, 3), epoch(gpu, 3)
    assert torch.equal(yc, yg.cpu())
    torch.testing.assert_close(xc, xg.cpu(), rtol=0, atol=1e-4)  # bilinear weights in float32
