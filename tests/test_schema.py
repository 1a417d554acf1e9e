"""The study schema: every shipped space loads, each malformed case fails with the file, the key
and the reason, `--set` overrides work, and the Ray Tune objects build.

    .venv/bin/pytest tests/test_schema.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Categorical, Float, Integer
from ray.tune.search.variant_generator import generate_variants

import retina.tta
from retina.errors import RetinaError
from study.define.dimensions import key_of
from study.define.schema import (
    DIMENSIONS,
    TTA_VIEWS,
    finite_values,
    hyperparameter_names,
    load_study,
    max_epochs,
    resolve_trial_config,
    study_from_dict,
    study_to_dict,
)
from study.define.space import (
    build_scheduler,
    build_search_alg,
    resolve_gpu,
    tune_config,
    tune_param_space,
)

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
DEMO = ROOT / "search_spaces" / "demo.yaml"
LAB3 = ROOT / "search_spaces" / "lab3.yaml"


def demo_doc() -> dict:
    return yaml.safe_load(DEMO.read_text())


def changed(doc: dict, dotted: str, value: object) -> dict:
    """`doc` with `value` at `dotted` (sections created); value DELETE removes the key."""
    node = doc
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


DELETE = object()


def write(tmp_path: Path, content: dict | str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(RetinaError) as info:
        load_study(path, overrides or [])
    return str(info.value)


# --- the shipped spaces ---------------------------------------------------------------------


def test_the_three_spaces_ship():
    assert {p.name for p in SPACES} >= {"demo.yaml", "lab3.yaml", "full.yaml"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_loads_and_round_trips(path, tmp_path):
    cfg = load_study(path)
    assert cfg.name == path.stem
    assert hyperparameter_names(cfg) == list(DIMENSIONS)
    resolved = json.loads(json.dumps(study_to_dict(cfg)))  # JSON-serialisable, as study.json
    assert study_from_dict(resolved, "study.json") == cfg
    assert load_study(write(tmp_path, study_to_dict(cfg))) == cfg  # and back through YAML


def test_demo_matches_the_brief():
    cfg = load_study(DEMO)
    assert (cfg.data.path, cfg.image_sizes, cfg.search.algorithm) == ("data/demo", (64,), "optuna")
    assert cfg.space["lr"].kind == "loguniform" and cfg.space["lr"].low == pytest.approx(3e-3)
    assert cfg.scheduler.name == "asha" and cfg.metric.name == "val_kappa"
    assert cfg.resources.gpu == "auto" and max_epochs(cfg) == 3
    assert cfg.scheduler.grace_period == 2  # ASHA's first rung is past the 1-epoch warm-up
    assert cfg.confirm.compare == ("head",) and cfg.confirm.seeds == 3


def test_recipes_of_the_shipped_spaces():
    from retina.augment import AUGMENTS
    from retina.schedules import SCHEDULES

    demo, full, lab3 = (load_study(ROOT / "search_spaces" / f"{n}.yaml") for n in ("demo", "full", "lab3"))  # fmt: skip
    # The names the schema accepts are the ones the core builds.
    assert finite_values(full.space["schedule"]) == SCHEDULES
    assert finite_values(full.space["augment"]) == AUGMENTS
    assert [demo.space[k].values[0] for k in ("schedule", "warmup_epochs", "augment")] == ["cosine", 1, "flips"]  # fmt: skip
    assert [lab3.space[k].values[0] for k in ("schedule", "warmup_epochs", "augment")] == ["constant", 0, "flips"]  # fmt: skip
    # Test-time augmentation: the counts the schema accepts are the subgroups retina.tta has.
    assert tuple(TTA_VIEWS) == retina.tta.TTA_VIEWS
    assert (demo.tta, lab3.tta, full.tta) == (2, 8, 8)


def test_tta_defaults_to_one_view_and_a_study_from_before_it_resumes_unchanged(tmp_path):
    from study.run.preflight import check_study_folder

    doc = changed(demo_doc(), "tta", DELETE)
    assert load_study(write(tmp_path, doc)).tta == 1
    assert load_study(DEMO, ["tta=8"]).tta == 8
    resolved = study_to_dict(load_study(DEMO, ["tta=1"]))
    old = json.loads(json.dumps(resolved))
    del old["tta"]  # as study.json was written before tta: it tested one view
    (tmp_path / "study.json").write_text(json.dumps({"config": old}))
    check_study_folder(tmp_path, resolved, resume=True)
    with pytest.raises(RetinaError, match="tta: 1 -> 8"):
        check_study_folder(tmp_path, study_to_dict(load_study(DEMO, ["tta=8"])), resume=True)


def test_lab3_is_the_reports_four_runs():
    cfg = load_study(LAB3)
    assert finite_values(cfg.space["arch"]) == ("resnet18", "resnet50")
    assert finite_values(cfg.space["pretrained"]) == (True, False)
    assert (cfg.search.algorithm, cfg.scheduler.name, cfg.metric.name) == (
        "grid",
        "none",
        "val_acc",
    )
    assert cfg.space["lr"].values == (1e-4,) and cfg.space["weight_decay"].values == (5e-3,)
    assert cfg.space["batch_size"].values == (8,) and cfg.image_sizes == (512,)
    assert max_epochs(cfg) == 10
    runs = [resolve_trial_config(cfg, {"arch": a, "pretrained": p}) for a, p in
            [("resnet18", True), ("resnet18", False), ("resnet50", True), ("resnet50", False)]]  # fmt: skip
    assert [r["epochs"] for r in runs] == [10, 10, 5, 5]
    assert {(r["optimizer"], r["momentum"], r["lr"]) for r in runs} == {("sgd", 0.9, 1e-4)}


# --- malformed files: the file, the key and the reason ----------------------------------------

CASES = {
    "unknown top key": ("num_sample", 2, "num_sample", "unknown key; did you mean num_samples?"),
    "unknown nested key": ("data.imagesize", 64, "data.imagesize", "did you mean data.image_size"),
    "unknown dimension": ("space.batchsize", 8, "space.batchsize", "did you mean space.batch_size"),
    "unknown dimension far off": ("space.learning_rate", 0.1, "space.learning_rate", "valid keys here: arch, pretrained, lr"),
    "unknown distribution": ("space.lr", {"logunifrom": [1e-4, 1e-2]}, "space.lr.logunifrom", "did you mean space.lr.loguniform"),
    "wrong type int": ("data.image_size", "big", "data.image_size", "expected a whole number, got 'big'; write e.g. 512"),
    "wrong type float int": ("num_samples", 2.5, "num_samples", "expected an integer, got 2.5"),
    "wrong type bool": ("space.pretrained", "yes please", "space.pretrained", "expected true or false"),
    "wrong type section": ("data", ["data/demo"], "data", "expected a mapping"),
    "empty choice": ("space.arch", {"choice": []}, "space.arch.choice", "expected a non-empty list"),
    "lr zero": ("space.lr", 0, "space.lr", "must be > 0, got 0"),
    "lr negative in choice": ("space.lr", {"choice": [0.1, -1]}, "space.lr.choice[1]", "must be > 0"),
    "lr negative range": ("space.lr", {"loguniform": [-1, 1]}, "space.lr.loguniform[0]", "must be > 0"),
    "unknown arch": ("space.arch", {"choice": ["resnet18", "vgg16"]}, "space.arch.choice[1]", "unknown arch 'vgg16'; choose one of resnet18, resnet34, resnet50"),
    "unknown optimizer": ("space.optimizer", "adam", "space.optimizer", "choose one of sgd, adamw"),
    "unknown head": ("space.head", {"choice": ["classify", "ordinal"]}, "space.head.choice[1]", "unknown head 'ordinal'; choose one of classify, regress"),
    "head as bool": ("space.head", True, "space.head", "unknown head true; choose one of classify, regress"),
    "batch size 1": ("space.batch_size", 1, "space.batch_size", "must be >= 2"),
    "epochs 0": ("space.epochs", {"choice": [0, 2]}, "space.epochs.choice[0]", "must be >= 1"),
    "momentum 1": ("space.momentum", 1.0, "space.momentum", "must be in [0, 1)"),
    "negative wd": ("space.weight_decay", -0.1, "space.weight_decay", "must be >= 0"),
    "list as value": ("space.batch_size", [8, 16], "space.batch_size", "write {choice: [...]}"),
    "two distributions": ("space.lr", {"choice": [0.1], "uniform": [0.1, 0.2]}, "space.lr", "exactly one of"),
    "uniform for int": ("space.epochs", {"uniform": [1, 3]}, "space.epochs.uniform", "does not fit epochs"),
    "randint empty": ("space.epochs", {"randint": [2, 2]}, "space.epochs.randint[1]", "high is exclusive"),
    "uniform reversed": ("space.momentum", {"uniform": [0.9, 0.5]}, "space.momentum.uniform", "low must be < high"),
    "loguniform from 0": ("space.weight_decay", {"loguniform": [0, 0.1]}, "space.weight_decay.loguniform[0]", "loguniform needs low > 0"),
    "grid with optuna": ("space.arch", {"grid": ["resnet18", "resnet50"]}, "space.arch", "does not work with search.algorithm optuna; write choice"),
    "choice with grid search": ("search.algorithm", "grid", "space.pretrained", "search.algorithm grid only enumerates grids"),
    "conditional missing entry": ("space.epochs", {"depends_on": "head", "values": {"classify": 2}}, "space.epochs.values", "no value for head = regress"),
    "conditional extra entry": ("space.epochs", {"depends_on": "arch", "values": {"resnet18": 2, "resnet50": 2, "resnet34": 2}}, "space.epochs.values.resnet34", "is not a value of space.arch"),
    "conditional on a range": ("space.epochs", {"depends_on": "lr", "values": {"a": 1}}, "space.epochs.depends_on", "not a choice, grid or fixed value"),
    "conditional on itself": ("space.epochs", {"depends_on": "epochs", "values": {"a": 1}}, "space.epochs.depends_on", "cannot depend on itself"),
    "conditional unknown dim": ("space.epochs", {"depends_on": "archh", "values": {"a": 1}}, "space.epochs.depends_on", "did you mean arch?"),
    "conditional bad value": ("space.epochs", {"depends_on": "arch", "values": {"resnet18": 0, "resnet50": 2}}, "space.epochs.values.resnet18", "must be >= 1"),
    "conditional no values": ("space.epochs", {"depends_on": "arch"}, "space.epochs.values", "missing"),
    "metric mode": ("metric.mode", "min", "metric.mode", "val_kappa is maximised, not min; use mode: max"),
    "unknown metric": ("metric.name", "val_f1", "metric.name", "choose one of val_kappa, val_acc"),
    "grace period": ("scheduler.grace_period", 4, "scheduler.grace_period", "at most 3"),
    "reduction factor": ("scheduler.reduction_factor", 1, "scheduler.reduction_factor", "must be > 1.0"),
    "fractions": ("data.val_fraction", 0.9, "data.test_fraction", "val_fraction + test_fraction must be < 1"),
    "image size": ("data.image_size", 8, "data.image_size", "must be >= 32, got 8; use 32 or more"),
    "image size 31": ("data.image_size", 31, "data.image_size", "must be >= 32, got 31; use 32 or more"),
    "image size huge": ("data.image_size", 2048, "data.image_size", "must be <= 1024"),
    "image size in a choice": ("data.image_size", {"choice": [256, 16]}, "data.image_size.choice[1]", "must be >= 32, got 16"),
    "image size twice": ("data.image_size", {"choice": [64, 64]}, "data.image_size.choice[1]", "listed twice"),
    "image size loguniform": ("data.image_size", {"loguniform": [64, 512]}, "data.image_size.loguniform", "each size needs a decode-once cache; list them, e.g. {choice: [256, 384, 512]}"),
    "image size randint": ("data.image_size", {"randint": [64, 512]}, "data.image_size.randint", "list them, e.g. {choice"),
    "image size grid with optuna": ("data.image_size", {"grid": [64, 128]}, "data.image_size", "does not work with search.algorithm optuna"),
    "image size in space": ("space.image_size", 64, "space.image_size", "image_size is written under data; move it to data.image_size"),
    "preprocessing": ("data.preprocessing", "clahe", "data.preprocessing", "choose one of none, graham"),
    "name with slash": ("name", "../x", "name", "not a usable folder name"),
    "gpu text": ("resources.gpu", "all", "resources.gpu", "write a number or auto"),
    "cpu zero": ("resources.cpu", 0, "resources.cpu", "must be > 0.0"),
    "max concurrent": ("max_concurrent", 0, "max_concurrent", "must be >= 1"),
    "keep checkpoints count": ("keep_checkpoints", 2, "keep_checkpoints", "expected needed or all, got 2; write needed"),
    "keep checkpoints word": ("keep_checkpoints", "best", "keep_checkpoints", "expected needed or all, got 'best'"),
    "missing name": ("name", DELETE, "name", "missing"),
    "missing lr": ("space.lr", DELETE, "space.lr", "missing; add e.g. lr: {loguniform"),
    "unknown schedule": ("space.schedule", {"choice": ["cosine", "step"]}, "space.schedule.choice[1]", "unknown schedule 'step'; choose one of constant, cosine"),
    "unknown augment": ("space.augment", "rotate", "space.augment", "unknown augment 'rotate'; choose one of flips, fundus"),
    "tta 3": ("tta", 3, "tta", "expected 1, 2, 4 or 8 views, got 3; write the views of the square image averaged at test (1: the image as is; 2: + its left-right mirror; 4: "),
    "tta as bool": ("tta", True, "tta", "expected 1, 2, 4 or 8 views, got true"),
    "tta as text": ("tta", "all", "tta", "expected 1, 2, 4 or 8 views, got 'all'"),
    "negative warm-up": ("space.warmup_epochs", -1, "space.warmup_epochs", "must be >= 0"),
    "warm-up as long as a run": ("space.warmup_epochs", 2, "space.warmup_epochs", "2 warm-up epochs leave no epoch after the warm-up: a trial can run as few as 2 epochs (space.epochs); set warmup_epochs to at most 1"),
    "sampled warm-up too long": ("space.warmup_epochs", {"randint": [0, 3]}, "space.warmup_epochs", "a trial can run as few as 2 epochs"),
    "warm-up per epochs": ("space.warmup_epochs", {"depends_on": "epochs", "values": {2: 1, 3: 3}}, "space.warmup_epochs", "3 warm-up epochs leave no epoch after the warm-up where epochs = 3"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_case_names_file_key_and_reason(case, tmp_path):
    dotted, value, key, reason = CASES[case]
    path = write(tmp_path, changed(demo_doc(), dotted, value))
    message = error_of(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message
    assert "; " in message  # what is wrong; how to fix it


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: demo\ndata: {path: x\n", "line 3, column 1: invalid YAML"),
        ("name: demo\n  space: 1\n", "line 2, column 8: invalid YAML"),
        ("- name\n- demo\n", "expected a mapping of keys (name, data, space, ...) at the top"),
        ("", "the file is empty"),
        ("name: !!python/object/apply:os.system [echo hi]\n", "invalid YAML"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
    ],
)
def test_unreadable_documents_are_clear(text, reason, tmp_path):
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}: ") and reason in message, message


def test_missing_file_folder_and_non_utf8(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert "file not found" in error_of(missing) and str(missing) in error_of(missing)
    assert "is a folder" in error_of(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in error_of(bad)


def test_yaml_1_2_floats_and_defaults(tmp_path):
    doc = "name: m\ndata: {path: d, image_size: 32}\nspace: {arch: resnet18, lr: 1e-3, batch_size: 8, epochs: 1}\nmetric: {name: val_loss}\n"
    cfg = load_study(write(tmp_path, doc))
    assert cfg.space["lr"].values == (1e-3,)  # not the string "1e-3"
    assert (cfg.metric.mode, cfg.search.algorithm, cfg.scheduler.name) == ("min", "optuna", "asha")
    assert [cfg.space[k].values[0] for k in ("optimizer", "momentum", "weight_decay", "pretrained", "class_weighted", "head")] == ["sgd", 0.9, 0.0, False, False, "classify"]  # fmt: skip
    # Today's recipe unless a study says otherwise: a constant lr, no warm-up, flips only.
    assert [cfg.space[k].values[0] for k in ("schedule", "warmup_epochs", "augment")] == ["constant", 0, "flips"]  # fmt: skip
    assert (cfg.test_top_k, cfg.max_failures, cfg.keep_checkpoints, cfg.seed) == (3, 2, "needed", 0)
    assert cfg.compile is False and cfg.max_concurrent is None and cfg.resources.cpu == 1.0


# --- --set overrides ---------------------------------------------------------------------------


def test_overrides_of_each_kind(tmp_path):
    path = write(tmp_path, changed(demo_doc(), "resources", DELETE))
    cfg = load_study(path, [
        "num_samples=2", "space.pretrained=false", "data.image_size=32",
        "space.lr={loguniform: [1e-4, 1e-2]}", "name=2024", "data.path=/srv/eyes: 2",
        "metric={name: val_loss, mode: min}", "max_concurrent=null", "resources.cpu=2",
        "space.batch_size={randint: [8, 17]}", "search.seed=7", "num_samples=3",
    ])  # fmt: skip
    assert cfg.num_samples == 3  # the last one wins
    assert cfg.space["pretrained"].kind == "fixed" and cfg.space["pretrained"].values == (False,)
    assert cfg.image_sizes == (32,) and cfg.space["lr"].low == 1e-4
    assert cfg.name == "2024" and cfg.data.path == "/srv/eyes: 2"  # text keys are verbatim
    assert cfg.metric.name == "val_loss" and cfg.max_concurrent is None
    assert cfg.resources.cpu == 2.0 and cfg.search.seed == 7
    assert (cfg.space["batch_size"].low, cfg.space["batch_size"].high) == (8, 17)
    assert load_study(path, ["name='quoted'"]).name == "quoted"


def test_overrides_do_not_change_the_callers_document():
    doc = demo_doc()
    before = json.dumps(doc, sort_keys=True)
    study_from_dict(doc, "demo", ["space.arch=resnet34", "data.image_size=32"])
    assert json.dumps(doc, sort_keys=True) == before


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("num_samples", "--set num_samples: expected KEY=VALUE"),
        (
            "num_sampels=2",
            "--set num_sampels=2: num_sampels: unknown key; did you mean num_samples?",
        ),
        (
            "data.imagesize=3",
            "--set data.imagesize=3: data.imagesize: unknown key; did you mean data.image_size?",
        ),
        (
            "space.lr.loguniform=[1, 2]",
            "space.lr: is one setting, not a section; set it whole: --set space.lr={choice",
        ),
        ("space.lr=[1e-3", "--set space.lr=[1e-3: space.lr: line 1, column 6: invalid YAML"),
        ("space.lr=-1", "--set space.lr=-1: space.lr: must be > 0"),
        (
            "data.image_size=big",
            "--set data.image_size=big: data.image_size: expected a whole number, got 'big'",
        ),
        ("space.arch={grid: [resnet18]}", "--set space.arch={grid: [resnet18]}: space.arch: grid"),
        (
            "search.algorithm=grid",
            "--set search.algorithm=grid: space.pretrained: choice is not a grid",
        ),
        ("metric.name=val_loss", "--set metric.name=val_loss: metric.mode: val_loss is minimised"),
    ],
)
def test_bad_overrides_name_the_override(item, expected):
    with pytest.raises(RetinaError) as info:
        load_study(DEMO, [item])
    assert str(info.value).startswith(f"{DEMO}: ") and expected in str(info.value), info.value


def test_keep_checkpoints_is_needed_or_all_and_set_works(tmp_path):
    assert load_study(DEMO).keep_checkpoints == "needed"
    assert load_study(DEMO, ["keep_checkpoints=all"]).keep_checkpoints == "all"
    path = write(tmp_path, changed(demo_doc(), "keep_checkpoints", "all"))
    cfg = load_study(path, ["keep_checkpoints=needed"])
    assert cfg.keep_checkpoints == "needed"
    assert study_from_dict(study_to_dict(load_study(path))).keep_checkpoints == "all"
    with pytest.raises(RetinaError) as info:
        load_study(DEMO, ["keep_checkpoints=3"])
    assert str(info.value).startswith(f"{DEMO}: --set keep_checkpoints=3: keep_checkpoints: ")


def test_a_file_error_is_not_blamed_on_an_unrelated_override(tmp_path):
    path = write(tmp_path, changed(demo_doc(), "space.lr", -1))
    message = error_of(path, ["num_samples=2"])
    assert message.startswith(f"{path}: space.lr: must be > 0"), message
    assert load_study(path, ["space.lr=0.01"]).space["lr"].values == (0.01,)  # fixed by --set


# --- resolved trials and helpers ---------------------------------------------------------------


def test_resolve_trial_config_fills_fixed_and_conditional_values(tmp_path):
    doc = changed(demo_doc(), "space.epochs", {"depends_on": "pretrained", "values": {True: 2, False: 4}})  # fmt: skip
    cfg = load_study(write(tmp_path, doc))
    assert finite_values(cfg.space["epochs"]) == (2, 4) and max_epochs(cfg) == 4
    # arch is fixed in demo.yaml: the study's value wins over a sampled one
    sampled = {"arch": np.str_("resnet50"), "pretrained": np.bool_(False), "lr": np.float64(0.01),
               "batch_size": np.int64(16), "weight_decay": 1e-4, "head": np.str_("regress"),
               "extra": "dropped"}  # fmt: skip
    hp = resolve_trial_config(cfg, sampled)
    assert list(hp) == list(DIMENSIONS)
    assert hp == {"arch": "resnet18", "pretrained": False, "lr": 0.01, "batch_size": 16,
                  "epochs": 4, "weight_decay": 1e-4, "optimizer": "sgd", "momentum": 0.9,
                  "class_weighted": False, "schedule": "cosine", "warmup_epochs": 1,
                  "augment": "flips", "head": "regress", "image_size": 64}  # fmt: skip
    assert [type(hp[k]) for k in ("pretrained", "lr", "batch_size")] == [bool, float, int]
    assert json.loads(json.dumps(study_to_dict(cfg)))["space"]["epochs"]["values"] == {"true": 2, "false": 4}  # fmt: skip
    assert study_from_dict(json.loads(json.dumps(study_to_dict(cfg)))) == cfg
    with pytest.raises(ValueError, match="no value for 'lr'"):
        resolve_trial_config(cfg, {"arch": "resnet18", "pretrained": True})


def test_max_epochs_of_a_randint(tmp_path):
    cfg = load_study(DEMO, ["space.epochs={randint: [2, 6]}"])
    assert max_epochs(cfg) == 5 and finite_values(cfg.space["epochs"]) is None


# --- the Ray side ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_ray_objects_build_for_every_shipped_space(path):
    cfg = load_study(path)
    space = tune_param_space(cfg)
    expected = {"choice": Categorical, "uniform": Float, "loguniform": Float, "randint": Integer}
    for name, dim in cfg.space.items():
        if dim.kind == "conditional":
            assert name not in space  # filled by resolve_trial_config
        elif dim.kind == "fixed":
            assert space[name] == dim.values[0]
        elif dim.kind == "grid":
            assert space[name] == {"grid_search": list(dim.values)}
        else:
            assert isinstance(space[name], expected[dim.kind])
    search = build_search_alg(cfg)
    if cfg.search.algorithm == "optuna":
        inner = search.searcher if isinstance(search, ConcurrencyLimiter) else search
        assert isinstance(inner, OptunaSearch)
        assert isinstance(search, ConcurrencyLimiter) == bool(cfg.max_concurrent)
    else:
        assert isinstance(search, BasicVariantGenerator)
    scheduler = build_scheduler(cfg)
    if cfg.scheduler.name == "asha":
        assert isinstance(scheduler, ASHAScheduler) and scheduler._max_t == max_epochs(cfg)
    else:
        assert isinstance(scheduler, FIFOScheduler)
    assert isinstance(tune_config(cfg), tune.TuneConfig)
    # Tune's own sampler draws configs the trainable can resolve, with plain Python types.
    rng = np.random.RandomState(0)
    for _, variant in list(generate_variants({"config": space}, random_state=rng))[:8]:
        hp = resolve_trial_config(cfg, variant["config"])
        assert load_study(path, [f"{key_of(k)}={json.dumps(v)}" for k, v in hp.items()])


def test_optuna_suggests_configs_from_the_param_space():
    cfg = load_study(DEMO)
    searcher = build_search_alg(cfg)
    assert searcher.set_search_properties("val_kappa", "max", tune_param_space(cfg))
    suggestions = [resolve_trial_config(cfg, searcher.suggest(f"t{i}")) for i in range(2)]
    assert all(
        s["arch"] in ("resnet18", "resnet50") and 1e-4 <= s["lr"] <= 0.1 for s in suggestions
    )
    again = build_search_alg(cfg)  # the seeded sampler repeats itself
    again.set_search_properties("val_kappa", "max", tune_param_space(cfg))
    assert resolve_trial_config(cfg, again.suggest("t0")) == suggestions[0]


def test_all_fixed_optuna_study_uses_the_basic_generator():
    items = [f"space.{k}={v}" for k, v in (("arch", "resnet18"), ("pretrained", "false"),
             ("lr", "0.01"), ("batch_size", 8), ("epochs", 2), ("weight_decay", 0),
             ("head", "classify"))]  # fmt: skip
    assert isinstance(build_search_alg(load_study(DEMO, items)), BasicVariantGenerator)


def test_resolve_gpu():
    auto = load_study(DEMO)
    assert resolve_gpu(auto, True) == 1.0 and resolve_gpu(auto, False) == 0.0
    half = load_study(DEMO, ["resources.gpu=0.5"])
    assert resolve_gpu(half, False) == 0.5 and resolve_gpu(half, True) == 0.5


def test_a_study_stored_before_the_recipe_dimensions_resumes_unchanged(tmp_path):
    from study.run.preflight import check_study_folder

    resolved = study_to_dict(load_study(DEMO, ["space.schedule=constant", "space.warmup_epochs=0"]))
    old = json.loads(json.dumps(resolved))
    for name in ("schedule", "warmup_epochs", "augment"):  # as study.json was written before them
        del old["space"][name]
    (tmp_path / "study.json").write_text(json.dumps({"config": old}))
    check_study_folder(tmp_path, resolved, resume=True)  # the defaults are what it ran
    changed = study_to_dict(load_study(DEMO))  # demo's own recipe: cosine, 1 warm-up epoch
    with pytest.raises(RetinaError, match="space.schedule: 'constant' -> 'cosine'"):
        check_study_folder(tmp_path, changed, resume=True)


def test_warmup_is_checked_per_case_when_both_depend_on_one_dimension(tmp_path):
    two = changed(demo_doc(), "space.arch", {"choice": ["resnet18", "resnet50"]})  # demo's is fixed
    doc = changed(two, "space.epochs", {"depends_on": "arch", "values": {"resnet18": 10, "resnet50": 2}})  # fmt: skip
    paired = changed(doc, "space.warmup_epochs", {"depends_on": "arch", "values": {"resnet18": 3, "resnet50": 1}})  # fmt: skip
    assert finite_values(load_study(write(tmp_path, paired)).space["warmup_epochs"]) == (3, 1)
    too_long = changed(doc, "space.warmup_epochs", {"depends_on": "arch", "values": {"resnet18": 3, "resnet50": 2}})  # fmt: skip
    assert "where arch = resnet50: a trial can run as few as 2 epochs" in error_of(write(tmp_path, too_long, "b.yaml"))  # fmt: skip
    unpaired = changed(doc, "space.warmup_epochs", 3)  # any trial: resnet50 runs 2 epochs
    assert "set warmup_epochs to at most 1" in error_of(write(tmp_path, unpaired, "c.yaml"))
