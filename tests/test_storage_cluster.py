"""No shared disk: a two-node Ray cluster on this machine whose worker node runs in its own
mount namespace, with tmpfs over the driver's results folder, the cache root and the data
folder, so it sees none of them; the study's storage is an S3-compatible server started here
(moto's, tests/helpers/s3.py). A real sweep trains on both nodes, confirms and exports;
everything the worker needs reaches it through the bucket (the published cache, Ray's
checkpoints).

    .venv/bin/pytest tests/test_storage_cluster.py   # as root (CI): a mount namespace

Layout: head = `ray start --head --block` (1 CPU) in this namespace, beside the driver;
worker = `unshare --mount sh -c 'mount -t tmpfs ... && exec ray start --address ... --block'`
(1 CPU); the driver joins with --address; one trial per node (1 CPU each, 2 at once).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess

import pandas as pd
import pytest

from tests.helpers.cli import ROOT, run_cli
from tests.helpers.processes import descendants, kill_tree, sweep_args, wait_for
from tests.helpers.s3 import free_port, s3_server

pytestmark = pytest.mark.slow


def _can_unshare() -> str | None:
    """Why this machine cannot make a mount namespace with tmpfs mounts, or None."""
    if os.geteuid() != 0:
        return "not root: a mount namespace with tmpfs mounts needs root (CI runs as root)"
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True, text=True)  # fmt: skip
    return None if probe.returncode == 0 else f"unshare --mount failed: {probe.stderr.strip()}"


def _ray(*args: str) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "ray"), "start", "--block", "--disable-usage-stats",
            "--num-cpus=1", f"--dashboard-agent-listen-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            *args]  # fmt: skip


def test_a_study_on_a_worker_that_cannot_see_the_drivers_disk(tmp_path, synthetic_data):
    why = _can_unshare()
    if why:
        pytest.skip(why)
    results, cache, home = tmp_path / "results", tmp_path / "cache", tmp_path / "home"
    for folder in (results, cache, home):
        folder.mkdir()
    port = free_port()
    started: list[subprocess.Popen] = []
    with s3_server() as s3:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "AWS_"))}
        env |= s3.env | {"HOME": str(home), "RETINA_CACHE": str(cache), "PYTHONPATH": str(ROOT),
                         "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # fmt: skip
        try:
            status = [str(ROOT / ".venv" / "bin" / "ray"), "status", f"--address=127.0.0.1:{port}"]

            def nodes(n: int):
                def up():
                    out = subprocess.run(status, env=env, capture_output=True, text=True).stdout
                    return len(re.findall(r"^ \d+ node_", out, re.M)) == n

                return up

            head = _ray("--head", f"--port={port}", "--include-dashboard=false",
                        f"--ray-client-server-port={free_port()}")  # fmt: skip
            with open(tmp_path / "head.log", "wb") as log:
                started.append(subprocess.Popen(head, env=env, cwd=ROOT, stdout=log,
                                                stderr=subprocess.STDOUT))  # fmt: skip
            wait_for(nodes(1), 180, "the head node", started[0], tmp_path / "head.log")
            hidden = " && ".join(
                f"mount -t tmpfs tmpfs {p}" for p in (results, cache, synthetic_data)
            )
            worker = " ".join(_ray(f"--address=127.0.0.1:{port}"))
            with open(tmp_path / "worker.log", "wb") as log:
                started.append(subprocess.Popen(
                    ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                     f"{hidden} && exec {worker}"], env=env, cwd=ROOT, stdout=log,
                    stderr=subprocess.STDOUT,
                ))  # fmt: skip
            wait_for(nodes(2), 180, "the worker node", started[1], tmp_path / "worker.log")
            args = sweep_args(synthetic_data, results, "nodisk", "--address",
                              f"127.0.0.1:{port}", "--storage", s3.uri(), "--cache-dir",
                              str(cache), "--set", "num_samples=2", "--set", "space.epochs=2",
                              "--set", "max_concurrent=2", "--set", "export=true",
                              "--set", "confirm.seeds=1")  # fmt: skip
            proc = run_cli(*args, env=env, timeout=900)
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        finally:
            for p in started:
                kill_tree(list(descendants(p.pid)))
                p.kill()
                p.wait()
        output = proc.stdout + proc.stderr
        # One line per fetch (Ray may echo a worker's line twice: counted once).
        fetched = {line for line in output.splitlines() if "cache: fetched" in line}
        print("\n".join(fetched))
        print(f"bytes fetched by the worker node: {fetched}; stored: "
              f"{sum(o['Size'] for o in s3.client().list_objects_v2(Bucket=s3.bucket)['Contents'])}")  # fmt: skip
    folder = results / "nodisk"
    trials = pd.read_parquet(folder / "trials.parquet")
    assert trials["node"].nunique() == 2, trials[["trial_id", "node", "stage"]]  # both nodes
    assert (trials["status"] == "TERMINATED").all()
    assert (trials["stage"] == "confirm").any()  # the confirm stage ran and finished
    assert (folder / "best" / "model.pt").exists() and (folder / "best" / "card.md").exists()
    assert len(fetched) == 1, output[-3000:]  # the worker node fetched the cache, once
    assert "cache: 1 published" in output
