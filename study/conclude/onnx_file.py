"""The winner's model.onnx: written by the dynamo exporter, with the metadata an ONNX user needs
to grade (a regress head's thresholds, the views the graph averages), and checked against
PyTorch with onnxruntime on real cached images before the export keeps it.

    write_onnx(with_views(model, views, stacked=True), x, path, onnx_metadata(head, cuts, views))
    onnx_parity(path, with_views(model, views), x)       # RetinaError unless they agree

The comparison itself (tolerances, probabilities, grades) is pure and lives in
`study.conclude.parity`; `study.conclude.export` assembles best/ around this file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from retina.errors import RetinaError
from retina.prepare import PreparedData
from retina.thresholds import DEFAULT_THRESHOLDS
from retina.tta import DihedralTTA
from study.conclude.parity import Parity, compare_logits, compare_scores, worst

OPSET = 18
PARITY_IMAGES = 32  # real cached images the ONNX file is checked on


def parity_images(data: PreparedData) -> torch.Tensor:
    """Up to PARITY_IMAGES real cached test images, normalised exactly as in evaluation."""
    x, _ = next(iter(data.loader("test", PARITY_IMAGES, torch.device("cpu"), train=False)))
    return x.clone()


def onnx_output(model: torch.nn.Module) -> str:
    """The ONNX output's name: `logits` [N, 5] (classify) or `score` [N, 1] (regress); of the
    network inside a `DihedralTTA` (its outputs keep the network's shape and meaning)."""
    network = model.model if isinstance(model, DihedralTTA) else model
    return "score" if network.fc.out_features == 1 else "logits"


SCREENING_KEYS = ("temperature", "referable_platt", "referable_threshold")


def write_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    metadata: dict[str, str] | None = None,
) -> None:
    """`metadata`: key/value text kept in the file (a regress head's `head` and `thresholds`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals
            torch.onnx.export(
                model, (example[:2],), str(path), dynamo=True, external_data=False,
                opset_version=OPSET, input_names=["images"], output_names=[onnx_output(model)],
                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
            )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any exporter failure ends the export, in one line
        raise RetinaError(f"ONNX export failed: {type(exc).__name__}: {exc}") from None
    if metadata:
        add_onnx_metadata(path, metadata)


def add_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(path))


def onnx_metadata(
    head: str, thresholds: list[float] | None, views: int = 1, screening: dict | None = None
) -> dict[str, str]:
    """What an ONNX user needs to grade a regress head's score: grade g when
    thresholds[g-1] <= score < thresholds[g] (`retina.predict` applies model.pt's); `tta`:
    how many dihedral views the graph averages (classify: its logits are then the log of the
    mean softmax; regress: the mean score); and the study's calibration, as model.pt holds it
    (`screening`, `card_screening.screening_record`): `temperature` (softmax(logits / T)),
    `referable_platt` ([slope, intercept]: P(referable) = 1 / (1 + exp(-(slope * score +
    intercept)))) and `referable_threshold`, each as JSON text."""
    meta = {"head": head, "tta": str(views)}
    if thresholds is not None:
        meta["thresholds"] = json.dumps(thresholds)
    for key in SCREENING_KEYS:
        if (screening or {}).get(key) is not None:
            meta[key] = json.dumps(screening[key])
    return meta


def onnx_parity(
    path: Path, model: torch.nn.Module, x: torch.Tensor, thresholds: list[float] | None = None
) -> Parity:
    """onnxruntime against PyTorch on `x` and on its first image alone (the dynamic batch):
    outputs within a tolerance that scales with them, probabilities and grades (a regress
    head: scores, and grades cut by `thresholds` (None: the ONNX file's own metadata);
    `study.conclude.parity`); RetinaError naming what disagrees."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = onnx_output(model)
    if name == "score" and thresholds is None:
        stored = session.get_modelmeta().custom_metadata_map.get("thresholds")
        thresholds = json.loads(stored) if stored else list(DEFAULT_THRESHOLDS)
    parts = []
    with torch.inference_mode():
        for batch in (x, x[:1]):
            expected = model(batch).numpy()
            got = session.run([name], {"images": batch.numpy()})[0]
            parts.append(
                compare_scores(expected, got, thresholds)
                if name == "score"
                else compare_logits(expected, got)
            )
    verdict = worst(parts)
    if not verdict.ok:
        raise RetinaError(
            f"the ONNX model disagrees with PyTorch on {len(x)} real images: "
            + "; ".join(verdict.problems())
            + "; nothing was written"
        )
    return verdict


def onnx_max_difference(path: Path, model: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest |output| difference of a passing parity check (`onnx_parity`)."""
    return onnx_parity(path, model, x).max_diff
