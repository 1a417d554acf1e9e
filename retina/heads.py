"""The two heads a model can have, and what its outputs mean: grades, scores, the loss.

    classify   5 logits; softmax + cross-entropy; grade = arg max; score = sum_k k * p_k
    regress    1 output, trained towards the grade with SmoothL1; score = the output;
               grade = the score cut by thresholds (`retina.thresholds`: 0.5/1.5/2.5/3.5, or
               the ones fitted on val at the selected epoch, which the model file keeps)

The engine (training, evaluation), `retina.predict` and the study's export all grade through
`grades_of` and `scores_of`, so one model gives one grade everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from retina.errors import RetinaError
from retina.metrics import NUM_CLASSES
from retina.thresholds import DEFAULT_THRESHOLDS, check_thresholds

HEADS = {"classify": NUM_CLASSES, "regress": 1}  # head -> outputs of the network


def head_outputs(head: str) -> int:
    """How many outputs the network's last layer has for `head`; RetinaError if unknown."""
    try:
        return HEADS[head]
    except KeyError:
        raise RetinaError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}") from None


def head_of(outputs: int) -> str:
    """The head of a network with that many outputs (a model file's `num_classes`)."""
    return "regress" if outputs == 1 else "classify"


class RegressionLoss(nn.Module):
    """SmoothL1 between the single output and the grade (as a float); with `weight` [5], each
    image weighs weight[grade] and the mean is over those weights (as CrossEntropyLoss's)."""

    def __init__(self, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per_image = F.smooth_l1_loss(outputs[:, 0].float(), y.float(), reduction="none")
        if self.weight is None:
            return per_image.mean()
        w = self.weight[y]
        return (per_image * w).sum() / w.sum()


def grades_of(outputs: torch.Tensor, thresholds: Sequence[float] | None = None) -> torch.Tensor:
    """int64 grades [B] of a batch of outputs: arg max of 5 logits, or the one output cut by
    `thresholds` (None: 0.5/1.5/2.5/3.5), exactly as `retina.thresholds.grades_from_scores`."""
    if outputs.shape[1] > 1:
        return outputs.argmax(dim=1)
    cuts = torch.tensor(
        check_thresholds(thresholds if thresholds is not None else DEFAULT_THRESHOLDS),
        dtype=torch.float64, device=outputs.device,
    )  # fmt: skip
    # float64 on both sides: a float32 score cut by float64 thresholds, as numpy cuts it.
    return torch.bucketize(outputs[:, 0].double(), cuts, right=True)


def scores_of(outputs: torch.Tensor) -> torch.Tensor:
    """float32 [B]: the expected grade sum_k k * p_k of 5 logits, or the one output as is."""
    if outputs.shape[1] == 1:
        return outputs[:, 0].float()
    probs = torch.softmax(outputs.float(), dim=1)
    return probs @ torch.arange(outputs.shape[1], dtype=torch.float32, device=outputs.device)


def regress_loss(weights: np.ndarray | None) -> nn.Module:
    return RegressionLoss(None if weights is None else torch.tensor(weights, dtype=torch.float32))
