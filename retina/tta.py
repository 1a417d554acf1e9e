"""Test-time augmentation (TTA): a model's outputs averaged over dihedral views of the image.

    model = with_views(model, 8)      # the model itself for 1 view
    outputs = model(x)                # [B, 5] log of the mean softmax, or [B, 1] the mean score

A fundus photograph is square in the cache and has no "up" or "left", so the 8 symmetries of
the square (the dihedral group D4: 4 rotations, each with or without a mirror) show the model
the same eye. `VIEWS` lists them in an order whose first 1, 2, 4 and 8 are each a subgroup:

    0 identity   1 hflip    2 vflip     3 rot180     (1-4: the Klein four-group)
    4 rot90      5 rot270   6 transpose 7 anti-transpose

so averaging over the first N views gives an output that does not change when the input is
turned by any of them (a group maps onto itself). `tta: 4` is {identity, hflip, vflip,
rot180}, not the 4 rotations: these are exactly the flips `retina.loader` trains every model
on (horizontal, vertical, or both, each 1/4), so every view is one the model has seen whatever
its `augment`; 90-degree turns are seen in training only with `augment: fundus`.

Averaging (why next to the code, in `average_outputs`): a classify head's softmax
probabilities, a regress head's score. The output keeps the shape and meaning of the network's
own, so the engine, `retina.grading`, the loss and the ONNX file use it unchanged.

The views run one after another, each a forward of the batch as given: memory stays that of
one view (8 views stacked into one batch of 8B would need 8x the activations), and on CPU the
loop is faster too (measured: resnet18 at 64 px, batch 64: 7.8x one view for the loop, 10.3x
stacked; resnet50 8.3x vs 22.6x).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from retina.errors import RetinaError

H, W = -2, -1  # the image axes of [B, C, H, W]
# The 8 elements of D4, ordered so that the first 1, 2, 4, 8 are subgroups (module doc).
VIEWS: tuple[tuple[str, Callable[[torch.Tensor], torch.Tensor]], ...] = (
    ("identity", lambda x: x),
    ("hflip", lambda x: x.flip(W)),
    ("vflip", lambda x: x.flip(H)),
    ("rot180", lambda x: x.flip((H, W))),
    ("rot90", lambda x: x.rot90(1, (H, W))),  # counter-clockwise as shown (retina.augment's sense)
    ("rot270", lambda x: x.rot90(3, (H, W))),
    ("transpose", lambda x: x.transpose(H, W)),  # mirror across the main diagonal
    ("anti-transpose", lambda x: x.flip((H, W)).transpose(H, W)),  # across the other diagonal
)
TTA_VIEWS = (1, 2, 4, 8)  # the subgroup sizes: the values `tta` may take


def check_views(views: int) -> int:
    """`views` when it is one of TTA_VIEWS; RetinaError otherwise."""
    if type(views) is not int or views not in TTA_VIEWS:  # True == 1, 8.0 == 8: not counts
        raise RetinaError(
            f"test-time augmentation takes 1, 2, 4 or 8 views (the dihedral subgroups of the "
            f"square), got {views!r}"
        )
    return int(views)


def view_names(views: int) -> list[str]:
    """The names of the first `views` views, e.g. ['identity', 'hflip'] for 2."""
    return [name for name, _ in VIEWS[: check_views(views)]]


def dihedral_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """View k (0-7, `VIEWS`) of a batch of square images [..., H, W]."""
    if x.shape[H] != x.shape[W]:
        raise ValueError(f"dihedral views need square images, got {tuple(x.shape[-2:])}")
    return VIEWS[k][1](x)


def average_outputs(outputs: torch.Tensor) -> torch.Tensor:
    """One output [B, K] from the views' outputs [V, B, K], in float32.

    Regress (K = 1): the mean score. The score is the grade on a continuous scale, so its mean
    stays on that scale and the thresholds fitted on val still cut it.
    Classify (K = 5): log of the mean softmax. The mean of probabilities is the mixture of the
    views' predictive distributions: a view that is unsure adds its doubt, and no single view
    can outvote the others with large logits (averaging logits - a geometric mean of the
    probabilities - lets one overconfident view win, as logits are unbounded). Returned as
    the log, computed stably as logsumexp of the log-softmaxes: softmax(log p) = p, so softmax,
    arg max, the expected grade and the cross-entropy (the NLL of the mean) read it as logits.
    """
    outputs = outputs.float()  # autocast's bf16/fp16 would round the sum
    if outputs.shape[-1] == 1:
        return outputs.mean(dim=0)
    log_probs = torch.log_softmax(outputs, dim=-1)
    return torch.logsumexp(log_probs, dim=0) - math.log(outputs.shape[0])


class DihedralTTA(nn.Module):
    """`model` evaluated on the first `views` dihedral views of its input, averaged.

    `stacked`: one forward of the views stacked into one batch of views x B images, instead of
    one forward per view. For the ONNX file: its graph then holds the network once (a loop
    would be unrolled into `views` copies: 3x the export time), and its runtime chooses the
    batch; PyTorch evaluation keeps the loop (bounded memory, faster on CPU: module doc).
    """

    def __init__(self, model: nn.Module, views: int, *, stacked: bool = False) -> None:
        super().__init__()
        self.model = model
        self.views = check_views(views)
        self.stacked = stacked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            outputs = [self.model(dihedral_view(x, k)) for k in range(self.views)]
            return average_outputs(torch.stack(outputs))
        views = torch.cat([dihedral_view(x, k) for k in range(self.views)])
        out = self.model(views)
        # [V*B, K] -> [V, B, K]: view k's images are the k-th block of B (reshape keeps the
        # batch symbolic in the ONNX graph, where chunk would fix it to the example's)
        return average_outputs(out.reshape(self.views, -1, out.shape[-1]))


def with_views(model: nn.Module, views: int, *, stacked: bool = False) -> nn.Module:
    """`model` itself for 1 view (the exact single-view path), else its `DihedralTTA`."""
    return model if check_views(views) == 1 else DihedralTTA(model, views, stacked=stacked)
