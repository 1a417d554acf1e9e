"""Report section "What the best model gets wrong": the study's gallery, images inline.

    python -m study.analyze results/demo   # the section reads results/demo/gallery/

`results/<study>/gallery/` (written by the sweep's last step, `study.conclude.gallery`; columns
in docs/results.md) holds small JPEGs and `index.parquet`. Each JPEG is embedded as a base64
data URI, so the report stays one file that opens offline. No torch: only pandas and bytes.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from retina.errors import RetinaError
from study.analyze.load import read_table
from study.record.layout import GALLERY_DIR
from study.record.layout import GALLERY_INDEX as INDEX_FILE

REQUIRED = ["image", "split", "true", "predicted", "probability", "kind", "file", "cam_file"]
GRADES = ("no DR", "mild", "moderate", "severe", "proliferative")  # ICDR grades 0-4
CSS = """
.gallery-row{display:flex;flex-wrap:wrap;gap:10px;margin:4px 0 10px}
.case{margin:0;padding:4px;background:#fff;border:2px solid #dde2e8;border-radius:4px;font-size:12px}
.case.error{border-color:#d9534f}.case.correct{border-color:#5cb85c}
.case img{width:128px;height:128px;object-fit:contain;background:#000;margin-right:2px}
.case figcaption{max-width:262px;overflow-wrap:anywhere}
"""


def read_gallery(study_folder: Path) -> pd.DataFrame | str:
    """The index with `src` and `cam_src` (data URIs) per row, or a one-line note saying why
    there is nothing to show. A file missing or unreadable is a note, not a failed report."""
    folder = Path(study_folder) / GALLERY_DIR
    index_file = folder / INDEX_FILE
    if not index_file.exists():
        return (
            "No gallery in this study (no gallery/ folder): it is written at the end of a "
            "sweep that finished; run the study to its end, or with --resume."
        )
    try:
        index = read_table(index_file)
    except RetinaError as exc:
        return str(exc)
    missing = [c for c in REQUIRED if c not in index.columns]
    if missing:
        return f"{index_file} lacks the column(s) {', '.join(missing)}; run the sweep again."
    try:
        index["src"] = [_data_uri(folder, name) for name in index["file"]]
        index["cam_src"] = [_data_uri(folder, name) for name in index["cam_file"]]
    except OSError as exc:
        return f"the gallery in {folder} is incomplete ({exc}); run the sweep again."
    return index


def _data_uri(folder: Path, name: str) -> str:
    path = folder / str(name)
    if path.parent != folder:  # a name from the index never leaves the gallery folder
        raise OSError(f"{name!r} is not a file of the gallery")
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _case(row) -> str:
    image = html.escape(str(row.image))
    verdict = "error" if row.kind == "error" else "correct"
    patient = getattr(row, "patient", None)
    who = image if patient is None or pd.isna(patient) else f"{image} (patient {html.escape(str(patient))})"  # fmt: skip
    return (
        f'<figure class="case {verdict}">'
        f'<img src="{row.src}" alt="{image}" title="{image}">'
        f'<img src="{row.cam_src}" alt="Grad-CAM of {image}" title="Grad-CAM: grade {int(row.predicted)}">'
        f"<figcaption><b>{verdict}</b>: true {int(row.true)}, predicted {int(row.predicted)} "
        f"(p = {float(row.probability):.2f})<br>{who}</figcaption></figure>"
    )  # fmt: skip


def gallery_html(index: pd.DataFrame) -> str:
    """The section's HTML from the index with data URIs (`read_gallery`): a row per true grade."""
    first = index.iloc[0] if not index.empty else None
    split = html.escape(str(first["split"])) if first is not None else "—"
    origin = (
        f"trial {html.escape(str(first['trial_id']))}, epoch {int(first['epoch'])}, "
        if first is not None and {"trial_id", "epoch"} <= set(index.columns)
        else ""
    )
    out = [
        f"<style>{CSS}</style><p class='note'>The best trial ({origin}on {split}): per true "
        "grade the errors it was most sure of (red), then correct cases drawn with the study's "
        "seed (green). Left: the image as the model saw it; right: Grad-CAM of the predicted "
        "grade (warm colours: the regions that drove that prediction); p: the probability "
        "the model gave its prediction.</p>"
    ]
    for grade, name in enumerate(GRADES):
        cases = index[index["true"] == grade]
        errors = int((cases["kind"] == "error").sum())
        out.append(f"<h3>True grade {grade} ({name}): {errors} error(s) shown</h3>")
        if cases.empty:
            out.append(f"<p class='note'>No image of grade {grade} to show on {split}.</p>")
            continue
        ordered = cases.sort_values("kind", key=lambda k: k != "error", kind="stable")
        cards = "".join(_case(row) for row in ordered.itertuples(index=False))
        out.append(f'<div class="gallery-row">{cards}</div>')
    return "".join(out)


def gallery_section(study_folder: Path) -> str:
    """The report section for the study in `study_folder`: the grid, or a one-line note."""
    index = read_gallery(study_folder)
    if isinstance(index, str):
        return f"<p class='note'>{html.escape(index)}</p>"
    return gallery_html(index)
