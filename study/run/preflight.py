"""Checks that run before Ray starts, so a study fails in seconds, not after an hour.

The results folder must be writable and must not hold another study; the ImageNet weights
for every arch the space can run pretrained must be present or downloadable; the data is
validated and its decode-once cache built, one per size `data.image_size` names (the core's
clear errors), so no trial decodes an image. Before the first image is decoded it prints what
the study will cost (images per split, each cache's disk size and whether it is built, free
disk, trials, a time bound from an earlier study: study/run/cost.py) and refuses caches that
will not fit. Each external test set (`external:`) is read and decoded the same way, at every
size, by `prepare_external_sets`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from retina.errors import RetinaError
from retina.external import prepare_external
from retina.models import ensure_weights, missing_weights
from retina.prepare import PreparedData, prepare_data
from study.define.dimensions import finite_values
from study.define.schema import StudyConfig, study_from_dict, study_to_dict
from study.record.disk import check_writable
from study.record.layout import STUDY_JSON
from study.record.published_cache import publish
from study.record.storage import Storage
from study.run.cost import study_cost_lines


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub}: added ({new[key]!r})")
            elif key not in new:
                out.append(f"{sub}: removed (was {old[key]!r})")
            else:
                out += _diff(old[key], new[key], sub)
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def with_current_defaults(old: dict) -> dict:
    """A stored resolved study with what this schema added since filled with its defaults
    (a study run before `schedule` existed ran the default, `constant`: resuming it is no
    change); as stored when this schema no longer reads it."""
    try:
        return study_to_dict(study_from_dict(old, STUDY_JSON))
    except RetinaError:
        return old


def space_changes(folder: Path, resolved: dict, flag: str) -> list[str]:
    """What differs between the space `folder`'s study was run with and `resolved`, one
    "key: old -> new" each; `flag` names the option in the message of an unreadable file."""
    study_json = folder / STUDY_JSON
    try:
        old = json.loads(study_json.read_text())["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise RetinaError(
            f"{flag}: {study_json} is unreadable ({exc}); remove the folder"
        ) from None
    return _diff(with_current_defaults(old), resolved)


def check_study_folder(folder: Path, resolved: dict, resume: bool) -> None:
    """Refuse to mix two studies in one folder, or to resume a study whose space changed."""
    study_json = folder / STUDY_JSON
    if not resume:
        if study_json.exists() or (folder / "tune").exists():
            raise RetinaError(
                f"{folder} already holds a study; continue it with --resume, "
                "or start a new one with --name NEW_NAME (or remove the folder)"
            )
        return
    if not study_json.exists():
        raise RetinaError(
            f"--resume: {folder} holds no study to resume (no study.json); run without --resume"
        )
    changes = space_changes(folder, resolved, "--resume")
    if changes:
        raise RetinaError(
            f"--resume: the study in {folder} was run with a different space; changed: "
            + "; ".join(changes[:10])
            + ". Resume with the original settings, or start a new study with --name NEW_NAME"
        )


def check_weights(study: StudyConfig) -> None:
    pretrained = finite_values(study.space["pretrained"])
    if pretrained is not None and True not in pretrained:
        return
    archs = finite_values(study.space["arch"]) or []
    for arch in archs:
        if not missing_weights([arch]):
            continue
        try:  # downloads the file where there is a network; offline it says what is missing
            ensure_weights(arch)
        except RetinaError as exc:
            raise RetinaError(
                f"{exc} — or run this study without pretrained trials: --set space.pretrained=false "
                "(or on_missing_weights: skip, which drops them only where weights are missing)"
            ) from None


def check_resources(study: StudyConfig, cpus: int, gpus: int) -> None:
    """A trial that asks for more CPUs or GPUs than this machine has would wait in Ray's queue
    forever (PENDING, with only the autoscaler's warning): refused here, with the fix."""
    gpu = study.resources.gpu  # "auto": one where CUDA is (study.define.space.resolve_gpu)
    need = {"CPU": study.resources.cpu, "GPU": float(gpus > 0) if gpu == "auto" else gpu}
    have = {"CPU": cpus, "GPU": gpus}
    short = [k for k in need if need[k] > have[k]]
    if short:
        key = {"CPU": "resources.cpu", "GPU": "resources.gpu"}[short[0]]
        raise RetinaError(
            f"{key}: a trial asks for {need[short[0]]:g} {short[0]}s and this machine has "
            f"{have[short[0]]}, so no trial would ever start; lower it (--set {key}="
            f"{max(have[short[0]], 1 if short[0] == 'CPU' else 0)}), or join a cluster that has "
            "them with --address"
        )


def preflight(
    study: StudyConfig, folder: Path, resolved: dict, resume: bool, cache_root: Path | None,
    joins_cluster: bool = False,
) -> PreparedData:  # fmt: skip
    """Every check before Ray starts, then the data and its caches; `joins_cluster`: the
    trials run on a cluster (--address), whose nodes this machine cannot count."""
    check_writable(folder.parent)
    check_study_folder(folder, resolved, resume)
    if not joins_cluster:  # Ray's local CPUs are this process's cores
        check_resources(study, len(os.sched_getaffinity(0)), torch.cuda.device_count())
    check_weights(study)
    data = prepare_data(
        study.data.path,
        study.image_sizes,  # a cache per size the space names, each built once, here
        study.data.preprocessing,
        split_seed=study.data.split_seed,
        skip_bad=study.data.skip_bad,
        cache_root=cache_root,
        val_fraction=study.data.val_fraction,
        test_fraction=study.data.test_fraction,
        progress=True,
        layout=study.data.layout,
        split_mode=study.data.split,
        announce=lambda plan: print("\n".join(study_cost_lines(study, plan, folder)), flush=True),
    )
    print("\n".join(data.summary))  # layout, patients, ungradable left out, which split
    publish_caches(study, folder, data)
    check_writable(folder)
    os.chmod(folder, 0o755)  # never world-writable, whatever the umask
    return data


def prepare_external_sets(
    study: StudyConfig, data: PreparedData, cache_root: Path | None
) -> dict[str, PreparedData]:
    """Each external set, read by the development data's readers and decoded once into the
    cache at every size the study can use (a missing folder fails here, before Ray starts)."""
    return {
        ext.name: prepare_external(
            ext.path,
            study.image_sizes,
            study.data.preprocessing,
            name=ext.name,
            skip_bad=study.data.skip_bad,
            cache_root=cache_root,
            development=data.data_dir,
        )  # fmt: skip
        for ext in study.external
    }


def publish_caches(study: StudyConfig, folder: Path, data: PreparedData) -> None:
    """With storage in a bucket, each cache goes there once (content-addressed), for nodes
    that have neither the data nor the driver's disk (study.record.published_cache)."""
    storage = Storage.resolve(study.storage, folder.parent)
    if storage.local:
        return
    caches = list(data.caches.values()) or [data.cache]
    sent = sum(publish(storage, cache) for cache in caches)
    print(f"cache: {len(caches)} published in {storage.uri} ({sent} bytes sent now)")
