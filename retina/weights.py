"""Fetch the ImageNet weights the studies need, once per machine (needs a network).

    python -m retina.weights                    # resnet18 resnet34 resnet50 (what `make weights` runs)
    python -m retina.weights resnet101          # any of retina.models.ARCHS

Files go where torchvision looks for them: $TORCH_HOME/hub/checkpoints/ (default
~/.cache/torch/hub/checkpoints/). To prepare an offline machine, run this where there is a
network and copy that folder over. Without a network: a clear message and exit status 2.
"""

from __future__ import annotations

import argparse

from retina.cli import run_command
from retina.errors import RetinaError
from retina.models import ARCHS, ensure_weights, weights_path

DEFAULT_ARCHS = ("resnet18", "resnet34", "resnet50")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m retina.weights",
        description="Download torchvision's ImageNet weights into $TORCH_HOME/hub/checkpoints.",
    )
    parser.add_argument(
        "archs",
        nargs="*",
        default=list(DEFAULT_ARCHS),
        metavar="ARCH",
        help=f"architectures (default: {' '.join(DEFAULT_ARCHS)}; choices: {', '.join(ARCHS)})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [a for a in args.archs if a not in ARCHS]
    if unknown:
        raise RetinaError(
            f"unknown architecture(s) {', '.join(unknown)}; choose from {', '.join(ARCHS)}"
        )
    failures: list[str] = []
    for arch in args.archs:
        had = weights_path(arch).is_file()
        try:
            path = ensure_weights(arch)
        except RetinaError as exc:
            # Keep going: the other files may already be here, and the user wants one summary.
            failures.append(str(exc))
            continue
        print(f"{arch}: {'already here' if had else 'downloaded'} {path}")
    if failures:
        raise RetinaError("\n".join(failures))
    return 0


if __name__ == "__main__":
    run_command(main)
