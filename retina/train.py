"""Train and evaluate one configuration without Ray: for debugging, and as a baseline.

    python -m retina.train --data data/demo --arch resnet18 --pretrained false --epochs 2 \
        --image-size 64 --batch-size 16 --lr 0.01 [--weight-decay 5e-4] [--optimizer sgd|adamw]
        [--momentum 0.9] [--class-weighted] [--head classify|regress]
        [--schedule constant|cosine] [--warmup-epochs 0] [--augment flips|fundus]
        [--preprocessing none|graham] [--seed 0]
        [--split-seed 0] [--split patient|published] [--layout auto|kaggle|lab|aptos|...]
        [--skip-bad] [--device auto|cpu|cuda] [--cache-dir DIR]
        [--save CKPT.pt] [--evaluate-test [--tta 1|2|4|8]]

Prints the majority-class baseline on val, then one line per epoch (train and val loss,
accuracy, kappa, images/s, and the lr at the epoch's end). `--schedule` steps the lr per batch
after `--warmup-epochs` of linear warm-up (retina.schedules); `--augment fundus` adds rotation,
zoom and colour to the flips (retina.augment). `--save` writes {model, optimizer, scheduler,
epoch, config, metrics, best_epoch, best_model} after every epoch (atomically). `--evaluate-test`
reports test metrics of the weights from the epoch with the best val kappa. `--head regress`: one
output trained with SmoothL1 on the grade; val metrics cut it at the fixed 0.5/1.5/2.5/3.5, and
the cuts fitted on val at the best epoch (`retina.thresholds`, saved as `best_thresholds`) grade
the test. `--tta N` averages the test over N dihedral views (`retina.tta`, as a study's `tta`)
and prints the one-view test beside it. Bad input: `error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from retina.augment import AUGMENTS
from retina.cli import run_command
from retina.engine import OPTIMIZERS, NonFiniteLoss
from retina.errors import RetinaError
from retina.files import write_atomic
from retina.heads import HEADS
from retina.images import PREPROCESSING
from retina.layouts import LAYOUT_NAMES, SPLITS
from retina.metrics import EpochMetrics
from retina.models import ARCHS, ensure_weights
from retina.prepare import prepare_data
from retina.schedules import SCHEDULES, build_schedule, current_lr
from retina.training import build_training, setup_process
from retina.tta import TTA_VIEWS

BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
DEVICES = {
    "auto": lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"),
    "cpu": lambda: torch.device("cpu"),
    "cuda": lambda: torch.device("cuda"),
}


def _bool(text: str) -> bool:
    try:
        return BOOLEANS[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    return parse


def _batch_size(text: str) -> int:
    value = int(text)
    if value < 2:  # batch norm cannot normalise a batch of one image in training mode
        raise argparse.ArgumentTypeError(f"must be >= 2 (batch norm needs 2 images), got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m retina.train", description="Train one configuration (no Ray)."
    )
    p.add_argument(
        "--data", type=Path, required=True, help="dataset folder (any layout: docs/data-layouts.md)"
    )
    p.add_argument("--arch", default="resnet18", choices=list(ARCHS))
    p.add_argument("--pretrained", type=_bool, default=False, metavar="true|false")
    p.add_argument("--epochs", type=_positive(int), default=2)
    p.add_argument("--image-size", type=_positive(int), default=64)
    p.add_argument("--batch-size", type=_batch_size, default=16)
    p.add_argument("--lr", type=_positive(float), default=0.01)
    p.add_argument("--weight-decay", type=_non_negative_float, default=5e-4)
    p.add_argument("--optimizer", default="sgd", choices=list(OPTIMIZERS))
    p.add_argument("--momentum", type=_non_negative_float, default=0.9)
    p.add_argument("--class-weighted", action="store_true", help="inverse-frequency class weights")
    p.add_argument("--head", default="classify", choices=list(HEADS),
                   help="classify: 5-way softmax; regress: one score cut by thresholds")  # fmt: skip
    p.add_argument("--schedule", default="constant", choices=list(SCHEDULES), help="lr per batch")
    p.add_argument(
        "--warmup-epochs", type=_non_negative_int, default=0, help="linear lr warm-up first"
    )
    p.add_argument(
        "--augment",
        default="flips",
        choices=list(AUGMENTS),
        help="fundus: + rotation, zoom, colour",
    )
    p.add_argument("--preprocessing", default="none", choices=list(PREPROCESSING))
    p.add_argument("--seed", type=int, default=0, help="training seed (init, shuffling, flips)")
    p.add_argument("--split-seed", type=int, default=0, help="train/val/test split seed")
    p.add_argument("--split", default="patient", choices=list(SPLITS),
                   help="published: keep the dataset's own train/test split (IDRiD, DDR)")  # fmt: skip
    p.add_argument("--layout", default="auto", choices=["auto", *LAYOUT_NAMES],
                   help="the data folder's layout (default: detected)")  # fmt: skip
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (recorded)")
    p.add_argument("--device", default="auto", choices=list(DEVICES))
    p.add_argument("--cache-dir", type=Path, default=None, help="default: $RETINA_CACHE")
    p.add_argument("--save", type=Path, default=None, metavar="CKPT.pt")
    p.add_argument("--evaluate-test", action="store_true", help="test metrics of the best epoch")
    p.add_argument(
        "--tta", type=int, default=1, choices=TTA_VIEWS, metavar="{1,2,4,8}",
        help="dihedral views averaged by --evaluate-test (val stays one view)",
    )  # fmt: skip
    return p


def resolve_device(name: str) -> torch.device:
    device = DEVICES[name]()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RetinaError("--device cuda was given but torch sees no CUDA GPU; use --device cpu")
    return device


def _line(label: str, m: EpochMetrics) -> str:
    return f"{label} loss {m.loss:.4f} acc {m.accuracy:.3f} kappa {m.kappa:.3f}"


def _save(path: Path, checkpoint: dict) -> None:
    """torch.save to a temp file beside `path`, then rename: never a half-written checkpoint."""
    try:
        write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))
    except OSError as exc:
        raise RetinaError(
            f"cannot write the checkpoint {path} ({exc.strerror or exc}); "
            "free space or choose another --save"
        ) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.warmup_epochs >= args.epochs:
        raise RetinaError(
            f"--warmup-epochs {args.warmup_epochs} leaves no epoch after the warm-up of a "
            f"{args.epochs}-epoch run; use at most {args.epochs - 1}, or raise --epochs"
        )
    device = resolve_device(args.device)
    setup_process(device, args.seed)  # deterministic on CPU; cuDNN autotuning on CUDA

    if args.pretrained:
        ensure_weights(args.arch)  # fail in seconds, before the cache build, when they are missing
    data = prepare_data(
        args.data,
        args.image_size,
        args.preprocessing,
        split_seed=args.split_seed,
        skip_bad=args.skip_bad,
        cache_root=args.cache_dir,
        layout=args.layout,
        split_mode=args.split,
    )
    print("\n".join(data.summary))
    counts = data.class_counts()
    n = {name: int(sum(c)) for name, c in counts.items()}
    print(
        f"data {data.data_dir} ({data.layout}): train {n['train']}, val {n['val']}, test {n['test']}"
    )
    print(f"grades in train {counts['train']}, val {counts['val']}, test {counts['test']}")
    majority = int(np.argmax(counts["train"]))
    baseline = counts["val"][majority] / n["val"] if n["val"] else float("nan")
    print(f"baseline: grade {majority} for every image -> val acc {baseline:.3f}, kappa 0.000")

    run = build_training(
        args.arch, args.pretrained, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, momentum=args.momentum,
        class_weighted=args.class_weighted, train_counts=counts["train"], device=device,
        head=args.head,
    )  # fmt: skip
    train_loader = data.loader(
        "train", args.batch_size, device, train=True, seed=args.seed, augment=args.augment
    )
    run.scheduler = build_schedule(
        args.schedule, run.optimizer, epochs=args.epochs, steps_per_epoch=len(train_loader),
        warmup_epochs=args.warmup_epochs,
    )  # fmt: skip
    val_loader = data.loader("val", args.batch_size, device, train=False)
    val_labels = data.labels[data.split.indices("val")]  # the val loader's order

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(device=str(device), dataset_hash=data.manifest_hash)
    history: list[dict[str, float]] = []
    best_kappa, best_epoch, best_state, best_thresholds = -float("inf"), 0, None, None
    for epoch in range(1, args.epochs + 1):
        train_loader.set_epoch(epoch)
        try:
            tm = run.train_epoch(train_loader)
        except NonFiniteLoss as exc:
            raise RetinaError(
                f"training diverged: {exc} of epoch {epoch}; lower --lr (now {args.lr})"
            ) from None
        # regress: val metrics at the fixed cuts (nothing fitted to val ranks the epochs);
        # the cuts fitted on this epoch's val scores go with its weights.
        vm = run.evaluate(val_loader, keep_probabilities=args.head == "regress")
        thresholds = run.fit_thresholds(vm, val_labels)
        history.append({"epoch": epoch, **tm.as_dict("train"), **vm.as_dict("val")})
        print(
            f"epoch {epoch}/{args.epochs}  {_line('train', tm)}  {_line('val', vm)}  "
            f"bal_acc {vm.balanced_accuracy:.3f}  {tm.images_per_s:.0f} img/s train, "
            f"{vm.images_per_s:.0f} img/s val  {tm.seconds + vm.seconds:.1f} s  "
            f"lr {current_lr(run.optimizer):.3g}",
            flush=True,
        )
        if vm.kappa > best_kappa:
            # A copy in memory (not a file): --evaluate-test needs the best epoch's weights.
            best_kappa, best_epoch, best_thresholds = vm.kappa, epoch, thresholds
            best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        checkpoint = {
            **run.state(),
            "epoch": epoch,
            "config": config,
            "metrics": history,
            "best_epoch": best_epoch,
            "best_model": best_state,
            "thresholds": thresholds,
            "best_thresholds": best_thresholds,
        }
        if args.save is not None:
            _save(args.save, checkpoint)
    print(f"best val kappa {best_kappa:.3f} at epoch {best_epoch}")
    if best_thresholds is not None:
        cuts = ", ".join(f"{t:.3f}" for t in best_thresholds)
        print(f"thresholds fitted on val at epoch {best_epoch}: {cuts}")

    if args.evaluate_test:
        run.model.load_state_dict(best_state)  # the checkpoint on disk keeps the final weights
        test_loader = data.loader("test", args.batch_size, device, train=False)
        te = run.evaluate(test_loader, thresholds=best_thresholds, views=args.tta)
        views = f", {args.tta} views" if args.tta > 1 else ""
        print(
            f"test (epoch {best_epoch}{views})  {_line('test', te)}  bal_acc "
            f"{te.balanced_accuracy:.3f}  referable sens {te.referable_sensitivity:.3f} spec "
            f"{te.referable_specificity:.3f}"
        )
        if args.tta > 1:  # what the views bring
            one = run.evaluate(test_loader, thresholds=best_thresholds)
            print(f"test (epoch {best_epoch}, 1 view)  {_line('test', one)}")
        if args.save is not None:
            checkpoint["test_metrics"] = {"epoch": best_epoch, **te.as_dict("test")}
            _save(args.save, checkpoint)
    return 0


if __name__ == "__main__":
    run_command(main)
