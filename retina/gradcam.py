"""Grad-CAM for torchvision ResNets, and a small JPEG of a fundus with its heatmap blended in.

    cams = grad_cam(model, x, targets)             # float32 [B, H, W] in [0, 1], on the CPU
    jpeg = overlay_jpeg(image_u8, cams[0], size=160)  # bytes of an RGB JPEG thumbnail

Grad-CAM (Selvaraju et al. 2017): the activations A of the last conv block (`layer4`), each
channel weighted by the mean gradient of the target logit over its positions, summed, ReLU,
upsampled to the image and scaled to [0, 1] per image. Two hooks on `layer4` are all it needs,
so the `grad-cam` package (which pulls in OpenCV and scikit-learn) is not a dependency. No
command of its own: `study.conclude.gallery` calls it for the best trial of a study.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

# A perceptually ordered map (dark blue -> teal -> yellow -> red, close to "turbo"): low values
# stay cool, high ones hot. Anchors at evenly spaced heat values; np.interp fills the rest.
_ANCHORS = np.array(
    [
        [48, 18, 59],
        [65, 105, 225],
        [27, 208, 213],
        [98, 252, 108],
        [225, 221, 55],
        [254, 155, 45],
        [203, 42, 4],
    ],
    dtype=np.float32,
)
FUNDUS_FLOOR = 8  # uint8: the cache's crop leaves the outside of the fundus circle at ~0


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | list[int],
    layer: nn.Module | None = None,
) -> torch.Tensor:
    """Grad-CAM heatmaps of `targets` (one class per image) for the normalised `images`.

    `layer` defaults to `model.layer4` (the last conv block of a torchvision ResNet). The model
    is run in eval mode and in float32; its parameters' `.grad` are left untouched (the
    gradient is taken with respect to the activations only) and its train/eval mode is
    restored. Returns float32 [B, H, W] on the CPU, each map in [0, 1] (all zeros when no
    position supports the target).
    """
    layer = layer if layer is not None else model.layer4
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), torch.autocast(images.device.type, enabled=False):
            # The input requires grad so that the activations are in the graph even when the
            # weights are frozen; autograd.grad below computes nothing upstream of `layer`.
            x = images.detach().float().requires_grad_(True)
            logits = model(x)
            target = torch.as_tensor(targets, device=logits.device).long().view(-1, 1)
            # Images are independent in eval mode: the sum's gradient is each image's own.
            score = logits.gather(1, target).sum()
            acts = captured[-1]
            (grads,) = torch.autograd.grad(score, acts)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam.squeeze(1).float().cpu()
    peak = cam.amax(dim=(1, 2), keepdim=True)
    # Bilinear upsampling of values >= 0 stays >= 0; dividing by the peak gives [0, 1].
    cam = torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))
    return torch.nan_to_num(cam, nan=0.0).clamp_(0.0, 1.0)


def colormap(heat: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a heatmap in [0, 1] (values outside are clipped)."""
    h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(_ANCHORS))
    rgb = np.stack([np.interp(h, stops, _ANCHORS[:, c]) for c in range(3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def _hwc(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] from the cache's [3, H, W] (or an [H, W, 3] already)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def blend(image: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """uint8 [H, W, 3]: the image with the colour-mapped heat over it, opaque where it is hot.

    The blend weight grows with the heat (`alpha * heat`), so cold regions keep the fundus
    visible and only what drove the decision is coloured; pixels darker than FUNDUS_FLOOR in
    every channel (the surround of the crop) stay as they are.
    """
    rgb = _hwc(image).astype(np.float32)
    h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    if h.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap {h.shape} does not match the image {rgb.shape[:2]}")
    # Only the fundus is coloured: the black surround outside its circle carries no evidence.
    weight = (alpha * h * (rgb.max(axis=-1) > FUNDUS_FLOOR))[..., None]
    out = (1.0 - weight) * rgb + weight * colormap(h).astype(np.float32)
    return np.rint(out).clip(0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, size: int = 160, quality: int = 80) -> bytes:
    """An RGB JPEG of `image` no larger than `size` px a side (never enlarged)."""
    picture = Image.fromarray(_hwc(image), mode="RGB")
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)  # keeps the aspect; never enlarges
    buffer = io.BytesIO()
    # Fixed settings (no optimize pass, baseline): the same pixels give the same bytes.
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def overlay_jpeg(
    image: np.ndarray, heat: np.ndarray | torch.Tensor, size: int = 160, quality: int = 80
) -> bytes:
    """JPEG thumbnail of the fundus (`image`, uint8 [3, H, W] or [H, W, 3]) with `heat` blended."""
    if isinstance(heat, torch.Tensor):
        heat = heat.detach().cpu().numpy()
    return jpeg(blend(image, heat), size, quality)
