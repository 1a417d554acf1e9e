"""External test sets without a sweep: the `external:` key and `--external`, the preflight's
preparation of a set (real synthetic images, real caches), a checkpoint tested on one, and
summary.json's `external` block and the report's section from real Parquet files (the sweep:
tests/test_external_sweep.py).

    .venv/bin/pytest tests/test_external.py
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from retina.engine import build_loss, evaluate
from retina.errors import RetinaError
from retina.external import prepare_external
from retina.models import build_model
from retina.prepare import prepare_data
from retina.synthetic import generate
from study.analyze.clinical import summary_runs
from study.analyze.load import load_study as load_results
from study.analyze.load import read_predictions
from study.analyze.resample import kappa
from study.analyze.section_external import external_section
from study.analyze.summary import build_summary
from study.conclude.holdout import evaluate_on_test
from study.define.schema import load_study, study_from_dict, study_to_dict
from study.record.layout import CHECKPOINT_FILE
from study.record.predictions import external_split, write_predictions
from tests.helpers.analyze_fixtures import CLASS_COUNTS, make_results, write_parquet
from tests.helpers.confirm_fixtures import add_confirm, patients, run_predictions

DEMO = "search_spaces/demo.yaml"
SETS = "external=[{name: messidor2, path: /data/messidor2}, {name: aptos, path: rel/aptos}]"


def test_external_sets_parse_in_order_paths_as_written_and_round_trip():
    study = load_study(DEMO, [SETS, "confirm.test=aptos"], ["ddr=~/data/ddr"])
    assert [(e.name, e.path) for e in study.external] == [
        ("messidor2", "/data/messidor2"), ("aptos", "rel/aptos"), ("ddr", "~/data/ddr"),
    ]  # fmt: skip
    assert study.confirm.test == "aptos"
    resolved = study_to_dict(study)
    assert resolved["external"][2] == {"name": "ddr", "path": "~/data/ddr"}
    assert study_from_dict(json.loads(json.dumps(resolved))) == study
    plain = load_study(DEMO)  # the defaults: no set, the comparison on the held-out test
    assert plain.external == () and plain.confirm.test == "test"


@pytest.mark.parametrize(
    ("overrides", "external", "message"),
    [
        (["external={name: a, path: b}"], [], "external: expected a list of sets"),
        (["external=[{name: a, path: x}, {name: a, path: y}]"], [], "'a' names two sets"),
        (["external=[{name: a/b, path: x}]"], [], "'a/b' is not a usable set name"),
        ([], ["test=/data/x"], "'test' is not a usable set name"),
        (["external=[{name: a}]"], [], "external[0].path: missing"),
        (["external=[{name: a, path: x, split: test}]"], [], "external[0].split: unknown key"),
        (["confirm.test=messidor2"], [], "'messidor2' is neither test nor an external set"),
        ([], ["messidor2"], "--external messidor2: expected NAME=PATH"),
    ],
)
def test_external_mistakes_name_the_key_and_the_fix(overrides, external, message):
    with pytest.raises(RetinaError) as caught:
        load_study(DEMO, overrides, external)
    assert message in str(caught.value)


def test_prepare_external_decodes_every_size_and_tests_every_image(tmp_path):
    folder = generate(tmp_path / "ext", n=8, size=32, seed=1)
    ext = prepare_external(folder, [24, 16], "none", name="ext", cache_root=tmp_path / "cache",
                           progress=False)  # fmt: skip
    assert ext.sizes == (16, 24) and ext.image_size == 16
    assert ext.split.test.tolist() == list(range(8))
    assert len(ext.split.train) == len(ext.split.val) == 0
    assert sum(ext.class_counts()["test"]) == 8
    assert ext.at_size(24).cache.open().shape == (8, 3, 24, 24)
    with pytest.raises(RetinaError, match="external set m2: .*missing does not exist"):
        prepare_external(tmp_path / "missing", [16], "none", name="m2")
    with pytest.raises(RetinaError, match="external set ext: .* is the development data"):
        prepare_external(folder, [16], "none", name="ext", development=folder)


@pytest.fixture(scope="module")
def external_study(tmp_path_factory):
    """A hand-built study with a confirm stage (pretrained beats scratch on its test) and an
    external set on which scratch beats pretrained; its predictions written by the sweep's
    writer (real Parquet), `confirm.test: ext`."""
    truth = {("resnet18", True): 0.85, ("resnet18", False): 0.5}
    folder = add_confirm(make_results(tmp_path_factory.mktemp("ext")), truth, seeds=3)
    rng = np.random.default_rng(7)
    eyes = patients(rng, 50)
    eyes["image"] = "x" + eyes["image"]  # the set's own names and patients
    eyes["patient"] = "x" + eyes["patient"]
    flip = {True: 0.45, False: 0.8}  # accuracy on the external set
    trials = pd.read_parquet(folder / "trials.parquet")
    own_val = patients(rng, 30)
    for trial_id in trials.loc[trials["stage"] == "confirm", "trial_id"]:  # val rows too
        path = folder / "predictions" / f"{trial_id}.parquet"
        val = run_predictions(rng, own_val, trial_id, 0.6, 0.0, "val")
        write_parquet(path, pd.concat([pd.read_parquet(path), val], ignore_index=True))
    study = load_results(folder)
    for trial_id, role in summary_runs(study):
        pretrained = bool(trials.set_index("trial_id").loc[trial_id, "pretrained"])
        acc = flip[pretrained] if role == "confirm" else 0.7
        rows = run_predictions(rng, eyes, trial_id, acc, 0.03, external_split("ext"))
        rows["score"] = np.float32(0.0)
        assert write_predictions(folder, trial_id, rows, external="ext")
    meta = json.loads((folder / "study.json").read_text())
    meta["config"]["external"] = [{"name": "ext", "path": "/data/ext"}]
    meta["config"]["confirm"]["test"] = "ext"
    (folder / "study.json").write_text(json.dumps(meta))
    study = load_results(folder)
    predictions = read_predictions(folder)
    return study, predictions, build_summary(study, predictions, n_resamples=500)


def test_summary_external_block_states_the_set_with_val_chosen_threshold(external_study):
    study, predictions, summary = external_study
    block = summary["external"]["ext"]
    rows = predictions[predictions["split"] == "external:ext"]
    best_id = summary_runs(study)[0][0]
    best = block["best"]
    assert best["trial_id"] == best_id and len(block["confirm"]) == 6
    own = rows[rows["trial_id"] == best_id]
    assert block["images"] == best["images"] == 100 and block["patients"] == 50
    cm = pd.crosstab(own["true"], own["predicted"]).reindex(
        index=range(5), columns=range(5), fill_value=0
    )
    assert best["confusion"] == cm.to_numpy().tolist()
    assert best["kappa"] == pytest.approx(float(kappa(cm.to_numpy())))
    assert best["acc"] == pytest.approx((own["true"] == own["predicted"]).mean())
    for m in ("kappa", "acc"):
        lo, hi = best[f"{m}_ci"]
        assert lo <= best[m] <= hi and hi - lo > 0
    # the grade shares beside the development test's
    shares = np.bincount(own["true"], minlength=5) / len(own)
    assert block["grade_shares"]["external"] == pytest.approx(shares.tolist())
    test = np.asarray(CLASS_COUNTS["test"]) / sum(CLASS_COUNTS["test"])
    assert block["grade_shares"]["development_test"] == pytest.approx(test.tolist())
    # nothing fitted on the set: the threshold and temperature are the development val's
    assert best["referable"]["threshold"] == summary["referable"]["best"]["threshold"]
    assert best["calibration"]["temperature"] == summary["calibration"]["best"]["temperature"]
    image = best["referable"]["test_image"]
    assert image["n"] == 100 and image["sensitivity_ci"][0] is not None
    assert best["referable"]["auroc_ci"][0] <= best["referable"]["auroc"]
    # confirm runs: no intervals of their own (their spread over seeds is theirs)
    assert block["confirm"][0]["kappa_ci"] == [None, None]


def test_confirm_test_compares_the_pairs_on_the_external_set(external_study):
    _, _, summary = external_study
    assert summary["confirm"]["test"] == "ext" and summary["confirm"]["status"] == "ok"
    assert summary["bootstrap"]["test_images"] == 100  # the external set's, not the test's
    (pair,) = summary["pairs"]
    # pretrained wins on the development test; on this set scratch does
    assert pair["metrics"]["acc"]["difference"] < 0
    assert pair["sentence"].startswith("On the external set ext: scratch beats pretrained")


def test_report_section_per_external_set(external_study):
    _, _, summary = external_study
    page = external_section(summary, lambda fig: f"<figure>{fig.layout.title.text}</figure>")
    assert "<h3>ext</h3>" in page and "100 images of 50 patients" in page
    assert "Best trial on ext" in page and "Grades of ext and of the development test" in page
    best = summary["external"]["ext"]["best"]
    assert f"{best['kappa']:.3f} [{best['kappa_ci'][0]:.3f}" in page
    assert "no external test set" in external_section({"external": {}}, str)


def test_an_external_set_is_tested_at_the_size_the_trial_trained_at(synthetic_data, tmp_path):
    """A class-weighted trial at 48 px: the loss keeps the development train's weights (the
    external set has no train split) and the images come from the set's 48 px cache."""
    cpu, root = torch.device("cpu"), tmp_path / "cache"
    data = prepare_data(synthetic_data, [32, 48], cache_root=root, progress=False)
    folder = generate(tmp_path / "ext", n=12, size=64, seed=1)
    ext = prepare_external(folder, [32, 48], "none", name="ext", cache_root=root, progress=False)
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    trial = {"arch": "resnet18", "class_weighted": True, "head": "classify", "image_size": 48}
    torch.save({"model": model.state_dict(), "epoch": 1, "config": {"trial": trial}},
               tmp_path / CHECKPOINT_FILE)  # fmt: skip
    tested = evaluate_on_test(tmp_path, data, cpu, tested_on=ext).metrics
    loss = build_loss(True, data.class_counts()["train"])
    direct = evaluate(model, ext.at_size(48).loader("test", 64, cpu, train=False), loss, cpu)
    assert tested.loss == pytest.approx(direct.loss, rel=1e-5)
    assert tested.confusion.sum() == 12
