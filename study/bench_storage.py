"""What storage in a bucket costs: the driver's time per result with S3 storage against the
same study stored locally, and checkpoint upload throughput.

    python -m study.bench_storage --work DIR \
        --storage 's3://BUCKET/bench?endpoint_override=http://127.0.0.1:9000' \
        [--trials 64] [--epochs 5] [--checkpoint-mb 45] [--json OUT]

Credentials from AWS_* as for a sweep. Keys:

- storage_driver_ms_per_result_local / _s3: the driver's time per result (the sweep's results
  callback, store, journal, Parquet rebuilds and retention; with S3 also the mirror's pushes
  and the checkpoint deletes in the bucket), one Ray Tune run each of `trials` no-op trials x
  `epochs` results, each with a tiny checkpoint (study.bench_driver.measure);
- storage_driver_cost_ratio: S3 over local (target <= 2 at 64 trials);
- storage_checkpoint_upload_mb_s: one checkpoint-sized folder (`--checkpoint-mb`, default 45:
  resnet18's weights) written to the storage with
  pyarrow.fs.copy_files, as Ray uploads a trial's checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from pathlib import Path

import pyarrow.fs as pafs

from study.bench_driver import measure
from study.record.storage import Storage


def _with_prefix(uri: str, sub: str) -> str:
    """`uri` with `/sub` added to its path (before its query)."""
    base, _, query = uri.partition("?")
    return f"{base.rstrip('/')}/{sub}" + (f"?{query}" if query else "")


def upload_mb_s(work: Path, uri: str, megabytes: int) -> float:
    """MB/s of one `megabytes` checkpoint folder copied to the storage, as Ray uploads one."""
    folder = work / "upload-checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.pt").write_bytes(os.urandom(megabytes << 20))
    storage = Storage.resolve(uri, work)
    target = f"{storage.root}/upload-{secrets.token_hex(4)}"
    began = time.perf_counter()
    pafs.copy_files(str(folder), target, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=storage.fs)  # fmt: skip
    seconds = time.perf_counter() - began
    storage.fs.delete_dir(target)
    return megabytes / seconds


def measure_storage(work: Path, uri: str, trials: int, epochs: int, megabytes: int) -> dict:
    Storage.resolve(uri, work).check()
    local = measure(work, trials, epochs, "ours")
    stored = measure(work, trials, epochs, "ours", storage=_with_prefix(uri, secrets.token_hex(4)))
    keys = {
        "storage_driver_ms_per_result_local": local["driver_ms_per_result"],
        "storage_driver_ms_per_result_s3": stored["driver_ms_per_result"],
        "storage_driver_cost_ratio": stored["driver_ms_per_result"] / local["driver_ms_per_result"],
        "storage_checkpoint_upload_mb_s": upload_mb_s(work, uri, megabytes),
    }
    return keys | {"details": {"local": local, "s3": stored}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.bench_storage", description=__doc__)
    p.add_argument("--work", type=Path, required=True, help="folder for Ray's and our results")
    p.add_argument("--storage", required=True, metavar="URI", help="s3://BUCKET/PREFIX[?...]")
    p.add_argument("--trials", type=int, default=64, help="trials of the study (64)")
    p.add_argument("--epochs", type=int, default=5, help="results per trial (5)")
    p.add_argument("--checkpoint-mb", type=int, default=45, help="size of the uploaded folder")
    p.add_argument("--json", type=Path, help="where to write the numbers (default: print)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import ray

    from study.run.tuner import start_ray

    args = parse_args(argv)
    os.environ["RAY_ADDRESS"] = "local"  # a Ray of our own, never a cluster left running
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    start_ray(None, None)
    try:
        keys = measure_storage(args.work, args.storage, args.trials, args.epochs,
                               args.checkpoint_mb)  # fmt: skip
    finally:
        ray.shutdown()
    text = json.dumps(keys, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    from retina.cli import run_command

    run_command(main)
