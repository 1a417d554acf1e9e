"""Export a study's best model: `python -m study.export results/<study> [--trial ID] [--out DIR]`.

Writes `results/<study>/best/` (or DIR): `model.pt` (weights_only-loadable, with everything
needed to use it), `model.onnx` (checked against PyTorch with onnxruntime) and `card.md`. The
sweep runs this at its end; run it again to export another trial or after a failure. The
study's data folder must still be there: the export checks the ONNX file on its cached images.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from retina.cli import run_command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.export", description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="a study's results folder, e.g. results/demo")
    p.add_argument("--trial", help="export this trial id (default: the best by the ranking)")
    p.add_argument("--out", type=Path, help="write here instead of results/<study>/best")
    p.add_argument("--cache-dir", type=Path, help="decode-once cache root (default $RETINA_CACHE)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.umask(os.umask(0) | 0o022)  # as the sweep: nothing in results/ writable by others
    from study.conclude.export import (
        check_target,
        export_model,
        locate,
        prepare_study_data,
        read_study,
    )

    study = read_study(args.study)
    # a wrong folder, trial or checkpoint fails in seconds
    row, _, _ = locate(args.study, study, args.trial)
    if args.out is not None:
        check_target(args.out)
    size = row.get("image_size")  # only the trial's size is needed (absent: an older study)
    data = prepare_study_data(study, args.cache_dir, None if pd.isna(size) else int(size))
    done = export_model(args.study, data, trial_id=args.trial, out=args.out)
    print(f"exported trial {done.trial_id} (epoch {done.epoch}) to {done.folder}")
    for name, size in done.sizes.items():
        print(f"  {name}: {size / 1e6:.1f} MB")
    print(f"  ONNX vs PyTorch: largest logit difference {done.onnx_max_diff:.2e}")
    return 0


if __name__ == "__main__":
    run_command(main)
