"""Training augmentation on the device, per batch: `flips` (the loader's own) or `fundus`.

`fundus` = the loader's flips, then for each image a random rotation (0-360 degrees: a fundus
photograph has no "up"), a zoom of 1 +- 10 % and brightness and contrast of 1 +- 10 %. The
geometry of the whole batch is ONE `affine_grid` + `grid_sample` call (bilinear); the colour is
one multiply-add and one clamp. Everything runs where the batch already is (the GPU in a
trial), on the normalised float batch the loader made, so nothing goes back to the host.

    augment = build_augment("fundus")                         # None for "flips"
    params = augment.draw(seed, epoch, n_positions, device)   # [n, 4], once per epoch
    x = augment(x, params[rows], scale, shift)                # per batch; retina.loader does it

Reproducible: the parameters of an epoch come from (seed, epoch) alone, through a generator of
their own, so the loader's shuffle and flips are the same with `flips` and with `fundus`, and
one seed gives the same batches on every run. Pixels the rotation brings in from outside the
square are black (the fundus' own background), and colours stay within the 0-255 range the
image had (as torchvision's ColorJitter clamps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from retina.errors import RetinaError

AUGMENTS = ("flips", "fundus")
_STREAM = 0x6A55  # mixes into the (seed, epoch) seed: a stream apart from the loader's shuffle


def rotation_theta(angle: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """affine_grid's theta [B, 2, 3] for a rotation by `angle` (radians, counter-clockwise as
    shown, i.e. like torch.rot90 for +pi/2) and a zoom (> 1 enlarges) about the image centre.

    affine_grid maps each output position to the input position it samples, so the matrix is
    the inverse of the motion: R(angle) / zoom.
    """
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    return torch.stack((torch.stack((cos, -sin, zero), 1), torch.stack((sin, cos, zero), 1)), 1)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """x [B, C, H, W] resampled through theta [B, 2, 3] (bilinear; zeros outside the image)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    state = np.random.SeedSequence([seed % 2**63, epoch % 2**63, _STREAM]).generate_state(2)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


@dataclass(frozen=True)
class FundusAugment:
    """Rotation, zoom, brightness and contrast drawn uniformly per image, applied per batch."""

    max_zoom: float = 0.10  # zoom in [1 - max_zoom, 1 + max_zoom]
    max_brightness: float = 0.10  # pixel values times [1 - b, 1 + b]
    max_contrast: float = 0.10  # distance from the image's mean grey times [1 - c, 1 + c]

    def draw(self, seed: int, epoch: int, n: int, device: torch.device) -> torch.Tensor:
        """float32 [n, 4] on `device`: angle (radians), zoom, brightness, contrast per position."""
        u = torch.rand((n, 4), generator=_epoch_generator(seed, epoch), dtype=torch.float64)
        spread = torch.tensor(
            [0.0, self.max_zoom, self.max_brightness, self.max_contrast], dtype=torch.float64
        )
        params = 1.0 + spread * (2.0 * u - 1.0)
        params[:, 0] = 2.0 * math.pi * u[:, 0]
        return params.to(device=device, dtype=torch.float32)

    def __call__(
        self, x: torch.Tensor, params: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
    ) -> torch.Tensor:
        """The augmented batch (a new tensor). x is normalised: pixel p (0-255) is stored as
        p * scale + shift per channel (retina.loader.normalisation_affine); params [B, 4]."""
        angle, zoom, brightness, contrast = params.unbind(1)
        # Sampled with black (p = 0, stored as `shift`) as the zero outside the image.
        pixels = warp(x - shift, rotation_theta(angle, zoom))  # p * scale
        b = pixels.shape[0]
        # Contrast about the image's mean grey, then brightness: p' = gain * p + offset.
        grey = (pixels.mean(dim=(2, 3)) / scale.view(1, 3)).mean(dim=1)  # [B], 0-255
        gain = (brightness * contrast).view(b, 1, 1, 1)
        offset = (brightness * (1.0 - contrast) * grey).view(b, 1, 1, 1)
        out = torch.addcmul(offset * scale + shift, gain, pixels)
        return out.clamp_(min=shift, max=255.0 * scale + shift)


def build_augment(name: str) -> FundusAugment | None:
    """The augmentation named `name`; None for `flips` (the loader flips on its own)."""
    if name not in AUGMENTS:
        raise RetinaError(f"unknown augment {name!r}; choose one of: {', '.join(AUGMENTS)}")
    return FundusAugment() if name == "fundus" else None
