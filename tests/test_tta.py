"""Test-time augmentation (retina.tta): the views are the dihedral group of the square, its
averages are invariant to the views they average, and every path grades with them alike.

    .venv/bin/pytest tests/test_tta.py
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retina.augment import rotation_theta, warp
from retina.engine import build_loss, evaluate
from retina.errors import RetinaError
from retina.heads import grades_of, scores_of
from retina.model_file import load_model, model_record
from retina.models import build_model
from retina.tta import TTA_VIEWS, VIEWS, DihedralTTA, check_views, dihedral_view, with_views

CPU = torch.device("cpu")


def image(size: int = 6, batch: int = 2) -> torch.Tensor:
    """Every pixel different: no symmetry of the square maps it onto itself."""
    return torch.arange(batch * 3 * size * size, dtype=torch.float32).reshape(batch, 3, size, size)


def which_view(x: torch.Tensor, y: torch.Tensor) -> int:
    """The k with dihedral_view(x, k) == y (exactly one, on an image without symmetry)."""
    found = [k for k in range(8) if torch.equal(dihedral_view(x, k), y)]
    assert len(found) == 1, found
    return found[0]


def test_the_rot90_view_is_the_augments_rotation_by_90_degrees():
    x = image()
    quarter = rotation_theta(torch.full((2,), math.pi / 2), torch.ones(2))
    assert torch.allclose(warp(x, quarter), dihedral_view(x, 4), atol=1e-4)
    assert [name for name, _ in VIEWS][4] == "rot90"
    half = rotation_theta(torch.full((2,), math.pi), torch.ones(2))
    assert torch.allclose(warp(x, half), dihedral_view(x, 3), atol=1e-4)  # rot180


def test_the_views_are_the_dihedral_group_and_the_first_2_and_4_are_subgroups():
    x = image()
    views = [dihedral_view(x, k) for k in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8  # all distinct
    # rot90 generates the 4 rotations; with one mirror, the 8 elements of D4
    r = lambda t: t.rot90(1, (-2, -1))  # noqa: E731
    assert torch.equal(views[3], r(r(x))) and torch.equal(views[5], r(r(r(x))))
    assert torch.equal(views[1], x.flip(-1)) and torch.equal(views[2], x.flip(-2))
    assert torch.equal(views[6], x.transpose(-2, -1))
    for n in TTA_VIEWS:
        # closed under composition: view a of view b is again among the first n
        composed = {which_view(x, dihedral_view(dihedral_view(x, b), a)) for a in range(n) for b in range(n)}  # fmt: skip
        assert composed == set(range(n)), n
    assert which_view(x, dihedral_view(dihedral_view(x, 4), 4)) == 3  # two quarters: a half


@pytest.mark.parametrize("outputs", [5, 1], ids=["classify", "regress"])
def test_eight_views_give_one_output_however_the_photo_is_turned(outputs):
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False, num_classes=outputs).eval()
    tta = DihedralTTA(model, 8).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        base = tta(x)
        for k in range(8):  # averaging over a group: any of its views of x gives the same
            assert torch.allclose(tta(dihedral_view(x, k)), base, atol=1e-5), k
        # 4 views (the flips training uses) are invariant to the flips, not to a quarter turn
        four = DihedralTTA(model, 4)
        assert torch.allclose(four(x.flip(-1)), four(x), atol=1e-5)
        assert not torch.allclose(four(dihedral_view(x, 4)), four(x), atol=1e-3)
        assert not torch.allclose(model(dihedral_view(x, 4)).float(), model(x), atol=1e-3)


def test_classify_averages_the_softmax_and_regress_the_score():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    classify = build_model("resnet18", pretrained=False).eval()
    regress = build_model("resnet18", pretrained=False, num_classes=1).eval()
    with torch.inference_mode():
        per_view = torch.stack([torch.softmax(classify(dihedral_view(x, k)), 1) for k in range(4)])
        out = with_views(classify, 4)(x)
        assert torch.allclose(torch.softmax(out, 1), per_view.mean(0), atol=1e-6)
        assert torch.equal(grades_of(out), per_view.mean(0).argmax(1))
        expected_grade = per_view.mean(0) @ torch.arange(5.0)
        assert torch.allclose(scores_of(out), expected_grade, atol=1e-5)
        scores = torch.stack([regress(dihedral_view(x, k)) for k in range(2)])
        assert torch.allclose(with_views(regress, 2)(x), scores.mean(0), atol=1e-6)
        # stacked (one forward of all views, as in the ONNX graph) = one forward per view
        stacked = DihedralTTA(classify, 8, stacked=True)
        assert torch.allclose(stacked(x), with_views(classify, 8)(x), atol=1e-5)


def test_one_view_is_the_model_itself_and_other_counts_are_refused():
    model = build_model("resnet18", pretrained=False)
    assert with_views(model, 1) is model
    for bad in (0, 3, 16, True, 8.0):
        with pytest.raises(RetinaError, match="1, 2, 4 or 8 views"):
            check_views(bad)


def test_evaluate_with_views_grades_as_the_mean_softmax(synthetic_data, private_cache):
    from retina.cache import build_cache
    from retina.loader import BatchLoader
    from retina.manifest import read_manifest

    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False).eval()
    manifest = read_manifest(synthetic_data)
    cache = build_cache(manifest, 32, cache_root=private_cache, progress=False).open()
    rows = np.arange(40)
    loader = BatchLoader(cache, manifest.labels, rows, 16, CPU, train=False)
    m = evaluate(with_views(model, 8), loader, build_loss(False), CPU, keep_probabilities=True)
    with torch.inference_mode():
        x = torch.cat([xb.clone() for xb, _ in loader])  # the loader reuses its buffer
        mean = torch.stack([torch.softmax(model(dihedral_view(x, k)), 1) for k in range(8)]).mean(0)
    assert np.allclose(m.probabilities, mean.numpy(), atol=1e-5)
    assert m.grades.tolist() == mean.argmax(1).tolist()
    nll = -torch.log(mean[torch.arange(len(rows)), torch.as_tensor(manifest.labels[rows])])
    assert m.loss == pytest.approx(float(nll.mean()), rel=1e-4)  # the NLL of the mean


def test_the_model_file_keeps_the_studys_views(tmp_path):
    model = build_model("resnet18", pretrained=False)
    record = model_record(model, arch="resnet18", image_size=32, preprocessing="none", info={}, tta=8)  # fmt: skip
    assert record["format_version"] == 1  # readable by older readers (who grade one view)
    (tmp_path / "a").mkdir()
    torch.save(record, tmp_path / "a" / "model.pt")
    assert load_model(tmp_path / "a").tta == 8
    del record["tta"]  # a file from before test-time augmentation
    torch.save(record, tmp_path / "a" / "model.pt")
    assert load_model(tmp_path / "a").tta == 1
    record["tta"] = 3
    torch.save(record, tmp_path / "a" / "model.pt")
    with pytest.raises(RetinaError, match=r"is damaged.*tta 3.*export it again"):
        load_model(tmp_path / "a")
