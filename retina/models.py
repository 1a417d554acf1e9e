"""torchvision ResNets for 5-grade DR classification, from scratch or from ImageNet weights.

    build_model("resnet50", pretrained=True)   # ImageNet weights from $TORCH_HOME, new 5-way head
    python -m retina.weights resnet18 resnet50 # (make weights) fetch the files once, with a network

No hand-written ResNet: torchvision's is the architecture the ImageNet weights were trained on.
Weights live where torchvision itself keeps them, `torch.hub.get_dir()/checkpoints/<file>`
(`$TORCH_HOME/hub/checkpoints`, default ~/.cache/torch), so one download serves every tool.
An offline machine without the file gets a `RetinaError` naming the file, where to put it, the
URL and `make weights`, after a connectivity probe of a few seconds (never a urllib traceback).
Set RETINA_WEIGHTS_MIRROR to a base URL (e.g. http://lab-server/models) to fetch the same file
names from a local mirror instead of download.pytorch.org.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm

from retina.errors import RetinaError
from retina.metrics import NUM_CLASSES

# The names are retina.archs.ARCH_NAMES (the schema reads those without torch; a test checks
# they agree). IMAGENET1K_V1 everywhere: it is what torchvision's old `pretrained=True` gave, i.e. the weights
# the course report's "pretrained" numbers came from, so our pretrained-vs-scratch comparison
# starts from the same point. (resnet50/101 also have a V2 recipe; it is a different baseline.)
ARCHS: dict[str, tuple] = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1),
}

MIRROR_ENV = "RETINA_WEIGHTS_MIRROR"
CONNECT_TIMEOUT_S = 3.0


def _arch(arch: str) -> tuple:
    try:
        return ARCHS[arch]
    except KeyError:
        raise RetinaError(
            f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}"
        ) from None


def weights_url(arch: str) -> str:
    """Where the ImageNet weights of `arch` are downloaded from ($RETINA_WEIGHTS_MIRROR if set)."""
    url = _arch(arch)[1].url
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{Path(urlparse(url).path).name}"
    return url


def weights_path(arch: str) -> Path:
    """$TORCH_HOME/hub/checkpoints/<torchvision's file name>, read when called (not at import)."""
    name = Path(urlparse(_arch(arch)[1].url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def missing_weights(archs: Iterable[str]) -> list[Path]:
    """The weight files of `archs` that are not on this machine yet."""
    return [p for p in (weights_path(a) for a in archs) if not p.is_file()]


def _missing_message(arch: str, path: Path, url: str, reason: str) -> str:
    return (
        f"ImageNet weights for {arch} are not on this machine and could not be downloaded "
        f"({reason}). Missing file: {path}. Fix: run `make weights` (python -m retina.weights "
        f"{arch}) on a machine with network access and copy the file to {path.parent}/ "
        f"(or set TORCH_HOME to the folder holding hub/checkpoints/), or download {url} "
        f"yourself and put it at {path}; or train with --pretrained false."
    )


def _probe(url: str) -> None:
    """Fail within seconds when the host is unreachable (urlopen has no timeout of its own)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    with socket.create_connection((parsed.hostname or "", port), timeout=CONNECT_TIMEOUT_S):
        pass


def ensure_weights(arch: str, *, progress: bool = True) -> Path:
    """Return the path of `arch`'s ImageNet weights, downloading them first if missing."""
    path = weights_path(arch)
    if path.is_file():
        return path
    url = weights_url(arch)
    try:
        _probe(url)
    except OSError as exc:
        raise RetinaError(_missing_message(arch, path, url, f"cannot reach {url}: {exc}")) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Download to a temp file in the same folder, then rename: a crash or a concurrent
        # download never leaves a half-written file under the final name.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
    except OSError as exc:
        raise RetinaError(
            f"cannot write the weights to {path.parent} ({exc}); set TORCH_HOME to a writable folder"
        ) from None
    try:
        # torchvision file names carry the first hex digits of the sha256 ("resnet18-f37072fd.pth").
        prefix = path.stem.rsplit("-", 1)[-1]
        torch.hub.download_url_to_file(url, tmp, hash_prefix=prefix, progress=progress)
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as exc:
        # urllib errors are OSErrors; a hash mismatch is a RuntimeError.
        raise RetinaError(_missing_message(arch, path, url, f"download failed: {exc}")) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of `arch`, read safely (weights_only) from the hub cache."""
    path = ensure_weights(arch)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling/zip error means the file is damaged
        raise RetinaError(
            f"cannot read the weights file {path} ({type(exc).__name__}: {exc}); delete it and "
            f"run `make weights` again"
        ) from None


def build_model(arch: str, pretrained: bool, num_classes: int = NUM_CLASSES) -> nn.Module:
    """A torchvision ResNet with a `num_classes`-way head; ImageNet-initialised when `pretrained`.

    The new head (`fc`) is always freshly initialised by torch's default Linear init, so the caller
    seeds torch first for reproducible models.
    """
    builder, _ = _arch(arch)
    if not pretrained:
        return builder(weights=None, num_classes=num_classes)
    model = builder(weights=None)  # 1000-way head, so the ImageNet state dict fits exactly
    state = load_imagenet_state(arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        path = weights_path(arch)
        raise RetinaError(
            f"the weights file {path} does not fit torchvision's {arch} ({exc}); delete it and "
            f"run `make weights` again"
        ) from None
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
