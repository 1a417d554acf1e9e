"""Grading new photographs: predict's images/s against a bare forward pass, `predict_efficiency`.

No command of its own; `python -m retina.bench` runs `bench_predict`. The same resnet18 (random
weights, saved and loaded as an exported model.pt), batch and size (128 px; 32 with --quick)
in both:
- bare: `model(x)` under inference_mode over normalised batches already in memory (what the
  model costs with no decoding at all);
- predict: `retina.grading.grade_files` over the JPEG files, the path `python -m retina.predict`
  runs: decode, crop and resize, normalise, forward, softmax, in DECODE_WORKERS lanes (threads
  that each decode a share of the batch and run the model on it with their share of the cores).
predict_efficiency = predict / bare: the median over interleaved rounds of the ratio within a
round. The decoding costs CPU time the bare pass does not spend; the lanes win it back by
running the forward passes on fewer threads each, which synchronise less.
"""

from __future__ import annotations

import numpy as np
import torch

from retina.bench.workspace import Workspace, median_rates, paired_ratio, timed
from retina.engine import seed_everything
from retina.grading import grade_files
from retina.loader import BatchLoader
from retina.model_file import MODEL_FILE, load_model, model_record
from retina.models import build_model

CPU = torch.device("cpu")
ARCH = "resnet18"
DECODE_WORKERS = 2


def bench_predict(ws: Workspace) -> tuple[dict[str, float], dict]:
    """predict_images_per_s, predict_bare_images_per_s and predict_efficiency; details."""
    s = ws.sizes
    size = s.loader_px[0]
    manifest = ws.dataset("loader", s.images)  # the loader benchmark's JPEGs, s.source_px wide
    seed_everything(0, deterministic=False)
    folder = ws.root / "predict-model"
    folder.mkdir(exist_ok=True)
    record = model_record(
        build_model(ARCH, pretrained=False), arch=ARCH, image_size=size, preprocessing="none",
        info={"note": "random weights, for the benchmark"},
    )  # fmt: skip
    torch.save(record, folder / MODEL_FILE)
    loaded = load_model(folder, CPU)
    images = ws.cache(manifest, size).open()
    loader = BatchLoader(
        images, manifest.labels, np.arange(len(manifest)), s.batch, CPU, train=False
    )
    batches = [x.clone() for x, _ in loader]

    def bare() -> int:
        with torch.inference_mode():
            for x in batches:
                loaded.model(x)
        return len(manifest)

    def predict() -> int:
        graded = grade_files(
            loaded, manifest.paths, batch_size=s.batch, device=CPU, workers=DECODE_WORKERS
        )
        assert graded.ok.all(), "the benchmark's JPEGs must all decode"
        return len(manifest)

    runs = {"bare": timed(bare, s.min_seconds), "predict": timed(predict, s.min_seconds)}
    raw: dict[str, list[float]] = {}
    rates = median_rates(runs, s.repeats, raw=raw)
    keys = {
        "predict_images_per_s": rates["predict"],
        "predict_bare_images_per_s": rates["bare"],
        "predict_efficiency": paired_ratio(raw, "predict", ["bare"]),
    }
    details = {
        "arch": ARCH,
        "px": size,
        "source_px": s.source_px,
        "batch": s.batch,
        "images": len(manifest),
        "decode_workers": DECODE_WORKERS,
        "threads": torch.get_num_threads(),
        "runs": raw,
    }
    return keys, details
