"""The GPU path at 512 px: resnet18 and resnet50, alone and four trials sharing one GPU.

No command of its own; `python -m retina.bench --gpu` (make bench-gpu) runs `bench_gpu`.
Each group runs in fresh processes (spawned: CUDA cannot be forked; forked on the CPU) that
do what a trial does: channels_last model, bf16 autocast (fp16 + GradScaler where bf16 is
unsupported), cuDNN autotuning, `BatchLoader` over a cache file (uint8 rows gathered by a
background thread, copied with pinned memory on a side stream, flipped and normalised on the
GPU). Per process:
- bare: optimizer steps over normalised batches already on the GPU (the model's own speed);
- epoch: `train_one_epoch` over the loader (what a trial gets).
epoch_efficiency = epoch / bare (summed over the processes of a group); the processes start
each phase together (a barrier) and the parent samples GPU utilisation (nvidia-smi, else
torch.cuda.utilization; null on CPU) while they run. `--quick` runs the same code on the CPU
with tiny sizes so that it cannot rot.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from itertools import islice

import numpy as np
import torch

from retina.bench.training import bare_pass, epoch_pass
from retina.bench.workspace import Workspace, rate
from retina.engine import autocast_dtype, build_loss, build_optimizer, seed_everything
from retina.errors import RetinaError
from retina.loader import BatchLoader
from retina.models import build_model

ARCHS = ("resnet18", "resnet50")
SHARED = 4  # trials sharing one GPU (resources.gpu: 0.25)
BARE_BATCHES = 8  # normalised batches kept on the device for the bare loop
TIMEOUT_S = 600  # a phase (or a warm-up) that takes longer than this is stuck


@dataclass(frozen=True)
class Job:
    archs: tuple[str, ...]  # measured one after another by the same processes
    cache: str  # .npy of uint8 [N, 3, S, S]
    batch: int
    device: str
    threads: int
    repeats: int
    seconds: float  # each timed phase runs whole passes for at least this long


def _measure_arch(arch: str, job: Job, barrier) -> dict[str, float]:
    """Warm up, then `repeats` x (bare phase, epoch phase), each phase ended by the barrier."""
    started = time.perf_counter()
    device = torch.device(job.device)
    cuda = device.type == "cuda"
    seed_everything(0, deterministic=not cuda)
    torch.backends.cudnn.benchmark = cuda  # fixed shapes: autotune each convolution once
    layout = torch.channels_last if cuda else torch.contiguous_format
    model = build_model(arch, pretrained=False).to(device, memory_format=layout)
    amp = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    optimizer = build_optimizer("sgd", model.parameters(), lr=0.01, weight_decay=5e-4)
    loss_fn = build_loss(False).to(device)
    images = np.load(job.cache, mmap_mode="r")
    labels = np.arange(len(images)) % 5
    loader = BatchLoader(images, labels, np.arange(len(images)), job.batch, device, train=True)
    batches = [(x.clone(), y.clone()) for x, y in islice(loader, BARE_BATCHES)]
    bare = bare_pass(model, batches, optimizer, loss_fn, amp, scaler)
    epoch = epoch_pass(model, loader, optimizer, loss_fn, device, amp, scaler)
    bare(), epoch()  # warm-up: autotuning, allocator, page cache
    setup_s = time.perf_counter() - started
    barrier.wait(TIMEOUT_S)  # every process is ready: the phases start together
    rates: dict[str, list[float]] = {"bare": [], "epoch": []}
    for _ in range(job.repeats):
        for phase, run in (("bare", bare), ("epoch", epoch)):
            rates[phase].append(rate(run, job.seconds))
            barrier.wait(TIMEOUT_S)
    medians = {phase: statistics.median(values) for phase, values in rates.items()}
    return {**medians, "setup_s": setup_s}


def _child(job: Job, barrier, results, rank: int) -> None:
    """A spawned process: every arch of the job in turn; the outcome goes to `results`."""
    try:
        torch.set_num_threads(job.threads)
        out = {}
        for arch in job.archs:
            out[arch] = _measure_arch(arch, job, barrier)
            if job.device.startswith("cuda"):
                torch.cuda.empty_cache()  # the next arch starts from a clean allocator
        results.put((rank, out))
    except BaseException as exc:  # report it to the parent, and release everyone waiting
        results.put((rank, {"error": f"{type(exc).__name__}: {exc}"}))
        barrier.abort()


class Utilisation:
    """Mean GPU utilisation (%) between start() and stop(); None where it cannot be read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[float] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.samples, self._stop = [], threading.Event()
        if self.device.type != "cuda":
            return
        smi = shutil.which("nvidia-smi")
        if smi:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
            gpu = visible or str(self.device.index or 0)
            query = [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            self._proc = subprocess.Popen(
                [*query, "-i", gpu, "-lms", "200"], stdout=subprocess.PIPE, text=True
            )
            self._thread = threading.Thread(target=self._read_smi, daemon=True)
        else:
            self._thread = threading.Thread(target=self._poll_torch, daemon=True)
        self._thread.start()

    def _read_smi(self) -> None:
        for line in self._proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass  # "[N/A]" on some GPUs

    def _poll_torch(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.samples.append(float(torch.cuda.utilization(self.device)))
            except Exception:  # needs pynvml; without it there is nothing to report
                return

    def stop(self) -> float | None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return statistics.mean(self.samples) if self.samples else None


def _watch(procs, barrier, stop: threading.Event) -> None:
    """Break the barrier as soon as a worker dies (killed, out of memory): nobody waits for it."""
    while not stop.wait(1.0):
        if any(p.exitcode not in (None, 0) for p in procs):
            barrier.abort()
            return


def run_group(job: Job, processes: int) -> dict[str, dict]:
    """`processes` copies of `job` in step; per arch: summed images/s per phase, utilisation."""
    # CUDA cannot be forked; the CPU run (--quick's check where no GPU is) forks, which spares
    # each process the ~4 CPU-s of importing torch and torchvision again (5 processes a run).
    ctx = multiprocessing.get_context("spawn" if job.device.startswith("cuda") else "fork")
    barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(job, barrier, results, rank), daemon=True)
        for rank in range(processes)
    ]
    for p in procs:
        p.start()
    stop = threading.Event()
    threading.Thread(target=_watch, args=(procs, barrier, stop), daemon=True).start()
    util = {arch: {"bare": [], "epoch": []} for arch in job.archs}
    meter = Utilisation(torch.device(job.device))
    outcome: dict[int, dict] = {}
    try:
        for arch in job.archs:
            barrier.wait(TIMEOUT_S)  # warmed up
            for phase in ("bare", "epoch") * job.repeats:
                meter.start()
                barrier.wait(TIMEOUT_S)  # the phase is over in every process
                value = meter.stop()
                if value is not None:
                    util[arch][phase].append(value)
    except threading.BrokenBarrierError:
        meter.stop()
    finally:
        stop.set()
        try:
            while len(outcome) < processes:
                rank, out = results.get(timeout=60)
                outcome[rank] = out
        except queue.Empty:
            pass
        for p in procs:
            p.join(timeout=60)
    errors = [r["error"] for r in outcome.values() if "error" in r]
    errors += [
        f"process {i} exited with code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode
    ]
    if errors or len(outcome) < processes:
        raise RetinaError(
            f"GPU benchmark of {', '.join(job.archs)} failed: {(errors or ['a worker process stopped answering'])[0]}"
        )
    groups = {}
    for arch in job.archs:
        per_process = [outcome[rank][arch] for rank in sorted(outcome)]
        bare = sum(r["bare"] for r in per_process)
        epoch = sum(r["epoch"] for r in per_process)
        used = {k: statistics.median(v) if v else None for k, v in util[arch].items()}
        groups[arch] = {
            "bare_images_per_s": bare,
            "epoch_images_per_s": epoch,
            "epoch_efficiency": epoch / bare,
            "gpu_utilization": used["epoch"],
            "gpu_utilization_bare": used["bare"],
            "per_process": per_process,
        }
    return groups


def bench_gpu(ws: Workspace, device: torch.device) -> tuple[dict, dict]:
    """resnet18/50 keys (alone and shared) and details; see the module docstring."""
    s = ws.sizes
    cache = ws.tiled_cache(s.gpu_px, s.gpu_images)
    cores = os.cpu_count() or 1
    results: dict = {}
    details: dict = {"px": s.gpu_px, "images": s.gpu_images, "batch": s.gpu_batch, "groups": {}}
    for processes, group in ((1, ""), (SHARED, f"shared{SHARED}_")):
        job = Job(
            archs=ARCHS,
            cache=str(cache.filename),
            batch=s.gpu_batch,
            device=str(device),
            threads=s.threads or max(1, cores // processes),
            repeats=s.repeats,
            seconds=s.gpu_seconds,
        )
        details["groups"][f"{processes}_processes"] = {"job": asdict(job)}
        for arch, out in run_group(job, processes).items():
            details["groups"][f"{processes}_processes"][arch] = out
            for key in ("bare_images_per_s", "epoch_images_per_s", "epoch_efficiency"):
                results[f"{arch}_{group}{key}"] = out[key]
            results[f"{arch}_{group}gpu_utilization"] = out["gpu_utilization"]
    return results, details
