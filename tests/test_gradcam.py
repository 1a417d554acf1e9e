"""Grad-CAM (retina/gradcam.py) on a hand-built model whose answer is known, and on a real
torchvision ResNet: heatmaps have the image's size, are finite, lie in [0, 1], and light up
where the evidence for the target grade is."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from retina.gradcam import blend, colormap, grad_cam, jpeg, overlay_jpeg
from retina.models import build_model

SIZE = 32


class RedGreenNet(nn.Module):
    """`layer4` has two channels, the red and the green of the input; grade 0's logit reads
    only the red channel, grade 1's only the green. So Grad-CAM of grade 0 must follow the
    red pixels and Grad-CAM of grade 1 the green ones."""

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        self.fc = nn.Linear(2, 5, bias=False)
        with torch.no_grad():
            self.layer4.weight.zero_()
            self.layer4.weight[0, 0] = 1.0  # channel 0 = red
            self.layer4.weight[1, 1] = 1.0  # channel 1 = green
            self.fc.weight.zero_()
            self.fc.weight[0, 0] = 1.0  # grade 0 <- red
            self.fc.weight[1, 1] = 1.0  # grade 1 <- green

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(x).mean(dim=(2, 3)))


def red_green_image() -> torch.Tensor:
    """A red square in the top-left quadrant, a green one in the bottom-right, black elsewhere."""
    x = torch.zeros(1, 3, SIZE, SIZE)
    half = SIZE // 2
    x[0, 0, 2 : half - 2, 2 : half - 2] = 1.0
    x[0, 1, half + 2 : -2, half + 2 : -2] = 1.0
    return x


def quadrant_means(cam: torch.Tensor) -> tuple[float, float]:
    half = SIZE // 2
    return float(cam[:half, :half].mean()), float(cam[half:, half:].mean())


def test_heatmap_follows_the_evidence_for_the_target_grade():
    model = RedGreenNet()
    x = red_green_image().repeat(2, 1, 1, 1)
    cams = grad_cam(model, x, [0, 1])
    assert cams.shape == (2, SIZE, SIZE) and cams.dtype == torch.float32
    assert torch.isfinite(cams).all() and cams.min() >= 0 and cams.max() == pytest.approx(1.0)
    red_tl, red_br = quadrant_means(cams[0])
    green_tl, green_br = quadrant_means(cams[1])
    assert red_tl > 0.5 and red_br == 0.0  # grade 0: the red square only
    assert green_br > 0.5 and green_tl == 0.0  # grade 1: the green square only


def test_no_evidence_gives_a_zero_map_and_the_model_is_left_as_it_was():
    model = RedGreenNet().train()
    cams = grad_cam(model, red_green_image(), [2])  # grade 2 reads nothing
    assert torch.equal(cams, torch.zeros(1, SIZE, SIZE))
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # no gradient left on the weights


def test_real_resnet_heatmaps_are_image_sized_finite_and_in_range():
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    x = torch.randn(3, 3, 64, 64)
    cams = grad_cam(model, x, torch.tensor([0, 3, 4]))
    assert cams.shape == (3, 64, 64)
    assert torch.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(grad_cam(model, x, [0, 3, 4]), cams)  # deterministic


def test_overlay_is_a_small_rgb_jpeg_coloured_where_the_heat_is():
    image = np.full((3, 48, 48), 90, dtype=np.uint8)  # the cache's [3, S, S] layout
    image[:, :4, :] = 0  # a black surround, as outside the fundus circle
    heat = np.zeros((48, 48), dtype=np.float32)
    heat[:24, :24] = 1.0
    blended = blend(image, heat)
    assert (blended[30:, 30:] == 90).all()  # cold: the fundus unchanged
    assert not (blended[5:20, 5:20] == 90).all()  # hot: coloured
    assert (blended[:4] == 0).all()  # hot but outside the fundus: left black
    assert (colormap(np.array([0.0, 1.0])) != colormap(np.array([0.5]))[0]).any()
    small = Image.open(io.BytesIO(overlay_jpeg(image, torch.from_numpy(heat), size=32)))
    assert small.format == "JPEG" and small.mode == "RGB" and small.size == (32, 32)
    same = Image.open(io.BytesIO(jpeg(image, size=160)))
    assert same.size == (48, 48)  # never enlarged
    with pytest.raises(ValueError, match="does not match"):
        blend(image, heat[:10])
