"""`on_missing_weights: skip`: run a study without its pretrained trials where ImageNet weights are
missing, instead of stopping (what lets `make sweep` run the demo on an offline machine).

    study, skipped = skip_missing_pretrained(study)   # before the study is resolved and recorded

With `fail` (the default) this does nothing and the preflight stops with the files it misses.
With `skip`, every arch that can run pretrained gets its weights from the torch cache or a
download; if some cannot, `pretrained` loses its `true` value and the sweep prints one warning
naming the missing files and `make weights`. The schema has no per-arch choice (a dimension
that depends on `arch` holds one value per arch, not a set), so when only some archs miss their
weights, `true` goes for every arch: a study never compares pretrained resnet18 with scratch-only
resnet50 by accident. A `pretrained` that is fixed to `true` (or maps a missing arch to `true`)
cannot be narrowed and stays an error.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from retina.errors import RetinaError
from retina.models import ensure_weights, missing_weights
from study.define.schema import Dimension, StudyConfig, finite_values


def pretrained_archs(study: StudyConfig) -> list[str]:
    """The archs a trial of `study` can train from ImageNet weights, in the space's order."""
    archs = list(finite_values(study.space["arch"]) or ())
    dim = study.space["pretrained"]
    if dim.kind == "conditional" and dim.depends_on == "arch":
        return [arch for arch, value in dim.by if value is True]
    return archs if True in (finite_values(dim) or ()) else []


def unavailable_weights(archs: list[str]) -> dict[str, RetinaError]:
    """Archs whose weights are neither in the torch cache nor downloadable, with the reason."""
    out: dict[str, RetinaError] = {}
    for arch in archs:
        if not missing_weights([arch]):
            continue
        try:  # downloads the file where there is a network
            ensure_weights(arch)
        except RetinaError as exc:
            out[arch] = exc
    return out


def _without_true(dim: Dimension) -> Dimension:
    """A dimension that depended on `pretrained` keeps only its value for `false`."""
    if dim.kind == "conditional" and dim.depends_on == "pretrained":
        return replace(dim, by=tuple((k, v) for k, v in dim.by if k is not True))
    return dim


def narrow_to_scratch(study: StudyConfig) -> StudyConfig:
    """`study` with `pretrained` fixed to false (and conditionals on it pruned to match)."""
    space = {name: _without_true(dim) for name, dim in study.space.items()}
    space["pretrained"] = Dimension("pretrained", "fixed", (False,))
    return replace(study, space=space)


def skip_missing_pretrained(study: StudyConfig) -> tuple[StudyConfig, list[str]]:
    """(the study to run, the archs whose pretrained trials were dropped); see the docstring."""
    if study.on_missing_weights != "skip":
        return study, []
    archs = pretrained_archs(study)
    missing = unavailable_weights(archs)
    if not missing:
        return study, []
    dim = study.space["pretrained"]
    if dim.kind not in ("choice", "grid") or False not in dim.values:
        first = next(iter(missing.values()))
        raise RetinaError(
            f"{first} — space.pretrained is {dim.to_yaml()!r}, which on_missing_weights: skip "
            "cannot narrow (it drops true only from a choice or grid that also holds false); "
            "write pretrained: {choice: [true, false]} or --set space.pretrained=false"
        )
    files = ", ".join(str(path) for path in missing_weights(missing))
    # One line: the study still runs, and the user sees exactly what to fetch.
    print(
        f"warning: ImageNet weights missing (not in the torch cache, not downloadable): {files}; "
        f"running scratch trials only (pretrained=false for {', '.join(archs)}; "
        "on_missing_weights: skip). Fetch them with `make weights` where there is a network.",
        file=sys.stderr,
    )
    return narrow_to_scratch(study), archs
