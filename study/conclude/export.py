"""Export a study's winner: `results/<study>/best/` with model.pt, model.onnx and card.md.

    python -m study.export results/<study> [--trial ID] [--out DIR]

Run at the end of every sweep (`study.conclude.pipeline`) and on demand. The trial is the best
search trial by the study's one ranking (`study.record.ranking`) unless `--trial` names one;
its weights come from the checkpoint of its best epoch in `tune/`. The ONNX file is checked
against PyTorch with onnxruntime on real cached images before anything is kept: outputs that
differ beyond a tolerance scaled by their size, or other probabilities or grades, fail the
export (`study.conclude.onnx_file` writes and checks the file; `study.conclude.parity`
compares). With the study's `tta` > 1 the ONNX graph holds the views itself
(`retina.tta.DihedralTTA`, stacked: one network, views x N images per run) and is checked
against the views as the study's tests ran them: an ONNX user gets the tested model from one
call, with nothing to rebuild (which views, averaged how) and nothing to get wrong; `model.pt`
keeps the bare network and its `tta`, so retina.predict can also grade with `--tta 1`. The
folder is filled under a temporary name and renamed into place
(`retina.files.write_folder_atomic`): never a half-written best/.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import torch

from retina.errors import RetinaError
from retina.files import write_folder_atomic
from retina.heads import head_outputs
from retina.model_file import CARD_FILE, GRADE_NAMES, MODEL_FILE, ONNX_FILE, model_record, plain
from retina.models import build_model
from retina.prepare import PreparedData, prepare_data
from retina.tta import with_views
from study.conclude.card import render_card
from study.conclude.card_inputs import CardInputs
from study.conclude.card_screening import screening_record
from study.conclude.holdout import checkpoint_on_disk
from study.conclude.onnx_file import OPSET, onnx_metadata, onnx_parity, parity_images, write_onnx
from study.define.schema import study_from_dict
from study.record.layout import (
    BEST_DIR,
    CHECKPOINT_FILE,
    EXPORT_FAILED_FILE,
    STUDY_JSON,
    SUMMARY_FILE,
    TRIALS_FILE,
    TUNE_DIR,
)
from study.record.ranking import best_trial_ids, rank_trials
from study.record.storage import Storage
from study.record.study_json import package_versions

EXPORT_PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "numpy")


@dataclass(frozen=True)
class Exported:
    folder: Path
    trial_id: str
    epoch: int
    onnx_max_diff: float
    sizes: dict[str, int]  # bytes per file


def read_study(folder: Path) -> dict[str, Any]:
    path = folder / STUDY_JSON
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RetinaError(
            f"{folder} is not a study's results folder (no study.json); pass results/<study>"
        ) from None
    except (OSError, ValueError) as exc:
        raise RetinaError(f"{path} is unreadable ({exc}); the study cannot be exported") from None


def read_trials(folder: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(folder / TRIALS_FILE)
    except (OSError, ValueError) as exc:
        raise RetinaError(
            f"{folder / TRIALS_FILE} is missing or unreadable ({exc}); run the study "
            "(or --resume it) until a trial finishes an epoch"
        ) from None


def choose_trial(trials: pd.DataFrame, study: dict, trial_id: str | None) -> tuple[dict, str]:
    """(the trial's row, one sentence on how it was chosen): the best search trial by the
    one ranking, or the trial named by `trial_id`."""
    metric, mode = study["metric"]["name"], study["metric"]["mode"]
    score = f"best_{metric}"
    search = trials[trials["stage"] == "search"] if "stage" in trials.columns else trials
    ranked = best_trial_ids(search, score, mode)
    rule = (
        f"the study's one ranking: {metric} on the validation split at each trial's best "
        f"epoch ({mode}), ties broken by the lower val loss, then the earlier trial"
    )
    if trial_id is None:
        if not ranked:
            raise RetinaError(
                "no trial of the search finished an epoch with a finite "
                f"{metric}; nothing to export (see trials.parquet's error column)"
            )
        trial_id = ranked[0]
        selection = (
            f"Best of {len(ranked)} search trials that finished cleanly (of {len(search)}) by "
            f"{rule}. The test split chose nothing: it was read only to test the best "
            f"{study.get('config', {}).get('test_top_k', '?')} after the search."
        )
    else:
        known = trials["trial_id"].astype(str).tolist()
        if trial_id not in known:
            raise RetinaError(
                f"--trial {trial_id}: no such trial in trials.parquet; known: "
                + ", ".join(rank_trials(trials, score, mode)["trial_id"].astype(str).head(10))
            )
        place = (
            f"rank {ranked.index(trial_id) + 1} of {len(ranked)}"
            if trial_id in ranked
            else "unranked"
        )
        selection = f"Chosen by hand with `--trial {trial_id}` ({place} by {rule})."
    row = trials[trials["trial_id"].astype(str) == trial_id].iloc[0].to_dict()
    if pd.isna(row.get("best_epoch")):
        raise RetinaError(f"trial {trial_id} finished no epoch: there is nothing to export")
    return plain({k: (None if v is pd.NA else v) for k, v in row.items()}), selection


def check_target(target: Path) -> None:
    """Only an exported model folder (or an empty one) may be replaced by an export."""
    if not target.exists():
        return
    if target.is_dir() and ((target / MODEL_FILE).exists() or not any(target.iterdir())):
        return
    raise RetinaError(f"{target} exists and is not an exported model; choose a new --out folder")


def find_trial_checkpoint(
    folder: Path, trial_id: str, epoch: int, storage: str | None = None
) -> Path:
    """checkpoint.pt of `trial_id`'s `epoch` under <storage>/<study>/tune/ or tune-more-K/ (the
    experiments of --more; default storage: results/<study>/), as a local file; RetinaError if
    gone."""
    where = Storage.resolve(storage, Path(folder).parent)
    study_path = where.study_path(Path(folder).name)
    experiment = f"{study_path}/{TUNE_DIR}"
    trial_dirs = []
    for exp in _listing(where.fs, study_path):
        if exp.type == pafs.FileType.Directory and exp.base_name.startswith(TUNE_DIR):
            trial_dirs += [i.path for i in _listing(where.fs, exp.path)
                           if fnmatch(i.base_name, f"*_{trial_id}_*")]  # fmt: skip
    for trial_dir in sorted(trial_dirs):
        found = checkpoint_on_disk(trial_dir, epoch, where.fs)
        if found is not None:
            return found / CHECKPOINT_FILE
    shown = (
        experiment
        if where.local
        else f"{where.uri.split('?', 1)[0]}/{Path(folder).name}/{TUNE_DIR}"
    )
    raise RetinaError(
        f"trial {trial_id}: no checkpoint of its best epoch {epoch} under {shown} "
        "(a finished study keeps the checkpoints of its tested trials and its winner only, "
        "unless the YAML says keep_checkpoints: all; a deleted or moved tune/ folder loses "
        f"them all); export a kept trial with `python -m study.export {folder} --trial ID`, "
        "or run the study again with keep_checkpoints: all"
    )


def _listing(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    try:
        return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:  # an unreadable folder holds no checkpoint we can use
        return []


def study_sizes(study: dict) -> list[int]:
    """Every image size of a study.json: its one size, or each one `data.image_size` names."""
    size = study["config"]["data"]["image_size"]
    if isinstance(size, int):  # also a study run before sizes were searchable
        return [size]
    return list(study_from_dict(study["config"], STUDY_JSON).image_sizes)


def prepare_study_data(
    study: dict, cache_root: Path | None = None, image_size: int | None = None
) -> PreparedData:
    """The study's data, split and cache again (the cache is reused when it is still there),
    at `image_size` (one trial's), or at every size the study names."""
    d = study["config"]["data"]
    sizes = [image_size] if image_size is not None else study_sizes(study)
    return prepare_data(
        d["path"], sizes, d["preprocessing"], split_seed=d["split_seed"],
        skip_bad=d["skip_bad"], cache_root=cache_root, val_fraction=d["val_fraction"],
        test_fraction=d["test_fraction"], progress=True, layout=d.get("layout", "auto"),
        split_mode=d.get("split", "patient"),
    )  # fmt: skip


def locate(
    folder: Path, study: dict, trial_id: str | None = None, trials: pd.DataFrame | None = None
) -> tuple[dict, str, Path]:
    """(the trial's row, how it was chosen, its best epoch's checkpoint.pt); RetinaError when
    the trial or its checkpoint is missing. Cheap: the CLI calls it before reading the data."""
    row, selection = choose_trial(
        read_trials(folder) if trials is None else trials, study, trial_id
    )
    storage = study["config"].get("storage")  # the study's --storage, as study.json says it
    checkpoint = find_trial_checkpoint(
        folder, str(row["trial_id"]), int(row["best_epoch"]), storage
    )
    return row, selection, checkpoint


def export_model(
    folder: Path,
    data: PreparedData,
    *,
    trial_id: str | None = None,
    out: Path | None = None,
    trials: pd.DataFrame | None = None,
) -> Exported:
    """Write the export of the chosen trial of the study in `folder` to `out` (default best/)."""
    folder = Path(folder)
    study = read_study(folder)
    row, selection, checkpoint = locate(folder, study, trial_id, trials)
    trial_id, epoch = str(row["trial_id"]), int(row["best_epoch"])
    target = Path(out) if out is not None else folder / BEST_DIR
    check_target(target)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = state["config"]["trial"]
    data = data.at_size(config.get("image_size", data.image_size))  # the size it trained at
    head = config.get("head", "classify")  # a checkpoint from before heads: classify
    model = build_model(config["arch"], pretrained=False, num_classes=head_outputs(head))
    model.load_state_dict(state["model"])
    model.eval()
    views = int(study.get("config", {}).get("tta", 1))  # a study from before tta: 1
    tested = with_views(model, views)  # as the study's tests ran it: one forward per view
    x = parity_images(data)
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    versions = package_versions(EXPORT_PACKAGES)
    metrics = {k: v for k, v in row.items() if k.startswith(("best_val_", "test_"))}
    info = {
        "study": study.get("name"), "trial_id": trial_id, "best_epoch": epoch,
        "config": config, "study_config": state["config"].get("study"), "metrics": metrics,
        "dataset_hash": study.get("data", {}).get("dataset_hash"), "data": study.get("data"),
        "selection": selection, "exported": date, "versions": versions,
    }  # fmt: skip
    result: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        record = model_record(
            model, arch=config["arch"], image_size=data.image_size,
            preprocessing=data.preprocessing, info=info, head=head,
            thresholds=state.get("thresholds"), tta=views,
        )  # fmt: skip
        screening = screening_record(folder, trial_id)  # T, Platt, threshold: retina.screening
        record |= screening
        torch.save(record, tmp / MODEL_FILE)
        graph = with_views(model, views, stacked=True)  # the network once in the ONNX graph
        meta = onnx_metadata(head, record["thresholds"], views, screening)
        write_onnx(graph, x, tmp / ONNX_FILE, meta)
        result["diff"] = onnx_parity(tmp / ONNX_FILE, tested, x, record["thresholds"]).max_diff
        summary_path = folder / SUMMARY_FILE
        card = CardInputs(
            study=study, trial=row, config=config, selection=selection,
            grade_names=GRADE_NAMES, onnx_max_diff=result["diff"], onnx_images=len(x),
            opset=OPSET, versions=versions, date=date, thresholds=record["thresholds"],
            summary=json.loads(summary_path.read_text()) if summary_path.exists() else None,
            tta=views,
        )  # fmt: skip
        (tmp / CARD_FILE).write_text(render_card(card))
        result["sizes"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}

    try:
        write_folder_atomic(target, fill)
    except OSError as exc:
        raise RetinaError(
            f"cannot write {target} ({exc}); free space or choose --out DIR"
        ) from None
    if target == folder / BEST_DIR:
        (folder / EXPORT_FAILED_FILE).unlink(missing_ok=True)  # best/ is the study's again
    return Exported(target, trial_id, epoch, result["diff"], result["sizes"])


def export_winner(
    folder: Path, data: PreparedData, trials: pd.DataFrame
) -> tuple[list[str], str | None]:
    """The sweep's export step: (the lines it prints, the sweep's closing line when it failed).
    A failure is reported, not raised: the search's results stand, and the export can be rerun
    on its own; `export-failed.txt` keeps the reason beside `best/` for whoever opens the
    folder later."""
    try:
        done = export_model(folder, data, trials=trials)
    except Exception as exc:  # noqa: BLE001 - the study is done: say what broke, keep its results
        why = str(exc) if isinstance(exc, RetinaError) else f"{type(exc).__name__}: {exc}"
        rerun = f"rerun it with: python -m study.export {folder}"
        lines = [f"export failed: {why}", rerun]
        try:
            (folder / EXPORT_FAILED_FILE).write_text("\n".join(lines) + "\n")
        except OSError:
            pass  # the lines are printed anyway
        return lines, f"EXPORT FAILED: {folder / BEST_DIR} was not written ({why}); {rerun}"
    sizes = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in done.sizes.items())
    return [f"trial {done.trial_id} (epoch {done.epoch}) -> {done.folder} ({sizes})"], None
