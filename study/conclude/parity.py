"""Does the ONNX file grade as PyTorch does? Pure: two arrays of outputs in, a verdict out.

A fixed absolute tolerance on logits fails every model whose logits are large: float32 keeps
about 7 significant digits, so a resnet50 from scratch with logits of +-2,400 differs by ~2e-3
between two correct runtimes (2.6e-6 relative) while its grades and probabilities agree. The
tolerance therefore scales with the outputs (ATOL + RTOL x the largest |output|), and the
things a user reads are compared too: the probabilities and the predicted grades. A grade may
differ only where PyTorch itself sits on a knife edge (its two best logits within the
tolerance); a real mismatch (other weights, a broken file) moves logits far more than that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retina.thresholds import grades_from_scores

OUTPUT_ATOL = 1e-4  # the floor for small outputs (the old fixed limit)
OUTPUT_RTOL = 1e-5  # of the largest |output|: ~4x float32's rounding seen on large logits
PROBABILITY_ATOL = 1e-3  # probabilities are in [0, 1]; softmax halves a logit error at most


@dataclass(frozen=True)
class Parity:
    """The comparison of one batch (or the worst of several, see `worst`)."""

    max_diff: float  # largest |ONNX - PyTorch| output (logit, or a regress head's score)
    tolerance: float  # what it was allowed: OUTPUT_ATOL + OUTPUT_RTOL * scale
    scale: float  # largest |PyTorch output|
    max_probability_diff: float  # 0 for a regress head (it has no probabilities)
    grade_mismatches: int  # grades that differ where PyTorch's grade is not a near-tie
    images: int

    @property
    def ok(self) -> bool:
        return (
            self.max_diff <= self.tolerance
            and self.max_probability_diff <= PROBABILITY_ATOL
            and self.grade_mismatches == 0
        )

    def problems(self) -> list[str]:
        """What disagrees, in words (empty when `ok`)."""
        out = []
        if not self.max_diff <= self.tolerance:  # NaN fails too
            out.append(
                f"largest logit/score difference {self.max_diff:.3g} over the "
                f"{self.tolerance:.3g} limit ({OUTPUT_ATOL:g} + {OUTPUT_RTOL:g} x the largest |output| "
                f"{self.scale:.3g})"
            )
        if not self.max_probability_diff <= PROBABILITY_ATOL:
            out.append(
                f"largest probability difference {self.max_probability_diff:.3g} over "
                f"{PROBABILITY_ATOL:g}"
            )
        if self.grade_mismatches:
            out.append(f"{self.grade_mismatches} of {self.images} predicted grades differ")
        return out


def tolerance_for(scale: float) -> float:
    return OUTPUT_ATOL + OUTPUT_RTOL * scale


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def compare_logits(expected: np.ndarray, got: np.ndarray) -> Parity:
    """PyTorch's logits `expected` [N, K] against ONNX's `got`."""
    expected, got = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    if got.shape != expected.shape:
        raise ValueError(f"ONNX gave outputs of shape {got.shape}, PyTorch {expected.shape}")
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    tolerance = tolerance_for(scale)
    diff = float(np.abs(got - expected).max()) if expected.size else 0.0
    prob_diff = float(np.abs(softmax(got) - softmax(expected)).max()) if expected.size else 0.0
    top2 = np.sort(expected, axis=1)[:, -2:] if expected.shape[1] > 1 else expected
    near_tie = (top2[:, -1] - top2[:, 0]) <= 2 * tolerance  # either side may round across
    differ = expected.argmax(axis=1) != got.argmax(axis=1)
    return Parity(diff, tolerance, scale, prob_diff, int((differ & ~near_tie).sum()), len(expected))


def compare_scores(expected: np.ndarray, got: np.ndarray, thresholds) -> Parity:
    """A regress head's scores [N, 1] (or [N]): PyTorch's `expected` against ONNX's `got`,
    and their grades cut by `thresholds`; a grade may differ only where PyTorch's score is
    within the tolerance of a cut."""
    expected = np.asarray(expected, np.float64).reshape(-1)
    got = np.asarray(got, np.float64).reshape(-1)
    if got.shape != expected.shape:
        raise ValueError(f"ONNX gave {got.size} scores, PyTorch {expected.size}")
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    tolerance = tolerance_for(scale)
    diff = float(np.abs(got - expected).max()) if expected.size else 0.0
    cuts = np.asarray(thresholds, np.float64)
    on_edge = (np.abs(expected[:, None] - cuts[None, :]) <= 2 * tolerance).any(axis=1)
    differ = grades_from_scores(expected, cuts) != grades_from_scores(
        np.nan_to_num(got, nan=-1e30), cuts
    )
    differ |= np.isnan(got)
    return Parity(diff, tolerance, scale, 0.0, int((differ & ~on_edge).sum()), len(expected))


def worst(parts: list[Parity]) -> Parity:
    """One verdict over several batches: the largest differences, the summed mismatches."""
    scale = max(p.scale for p in parts)
    return Parity(
        max_diff=float(np.max([p.max_diff for p in parts])),  # NaN stays NaN: it fails
        tolerance=tolerance_for(scale),
        scale=scale,
        max_probability_diff=float(np.max([p.max_probability_diff for p in parts])),
        grade_mismatches=sum(p.grade_mismatches for p in parts),
        images=sum(p.images for p in parts),
    )
