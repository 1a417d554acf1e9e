"""torchvision ResNets with a 5-way head; ImageNet weights from a temporary TORCH_HOME."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision

from retina.cli import run_main
from retina.errors import RetinaError
from retina.models import ARCHS, build_model, missing_weights, weights_path
from retina.weights import main as weights_main

# A closed port on this machine: the connection is refused at once, a deterministic "offline".
UNREACHABLE_MIRROR = "http://127.0.0.1:9/models"


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("RETINA_WEIGHTS_MIRROR", raising=False)
    return home


def _expected_file(weights_enum) -> str:
    # The file name torchvision itself derives from the URL (torch.hub.load_state_dict_from_url).
    return Path(urlparse(weights_enum.url).path).name


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_build_model_from_scratch_gives_five_outputs(arch):
    torch.manual_seed(0)
    model = build_model(arch, pretrained=False).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 5)
    assert isinstance(model, torchvision.models.ResNet)


def test_num_classes_is_honoured():
    assert build_model("resnet18", pretrained=False, num_classes=2).fc.out_features == 2


def test_the_schemas_names_are_the_models_built_and_need_no_torch():
    import subprocess
    import sys

    from retina.archs import ARCH_NAMES

    assert tuple(ARCHS) == ARCH_NAMES
    code = (
        "import sys; from study.define.schema import load_study; "
        "load_study('search_spaces/full.yaml'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # a study file is validated without importing torch


def test_unknown_arch_lists_the_choices():
    with pytest.raises(RetinaError) as err:
        build_model("resnet19", pretrained=False)
    for name in ARCHS:
        assert name in str(err.value)
    assert "resnet19" in str(err.value)


def test_weights_path_is_where_torchvision_looks(torch_home):
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert weights_path("resnet18") == expected
    assert expected.name == _expected_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)


def test_pretrained_loads_the_state_dict_from_torch_home(torch_home):
    torch.manual_seed(123)
    reference = torchvision.models.resnet18()  # stands in for the ImageNet file: same keys/shapes
    target = torch_home / "hub" / "checkpoints"
    target.mkdir(parents=True)
    path = target / _expected_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    torch.save(reference.state_dict(), path)
    assert missing_weights(["resnet18", "resnet34"]) == [weights_path("resnet34")]

    torch.manual_seed(0)  # a different seed: nothing but the file can make the weights match
    model = build_model("resnet18", pretrained=True)
    saved = reference.state_dict()
    loaded = model.state_dict()
    body = [k for k in saved if not k.startswith("fc.")]
    assert len(body) > 100
    for key in body:
        assert torch.equal(loaded[key], saved[key]), key
    assert model.fc.out_features == 5 and model.fc.in_features == 512
    assert loaded["fc.weight"].shape == (5, 512)
    with torch.inference_mode():
        assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 5)


def test_missing_weights_offline_names_file_and_fix(torch_home, monkeypatch):
    monkeypatch.setenv("RETINA_WEIGHTS_MIRROR", UNREACHABLE_MIRROR)
    with pytest.raises(RetinaError) as err:
        build_model("resnet34", pretrained=True)
    message = str(err.value)
    path = weights_path("resnet34")
    assert str(path) in message
    assert "make weights" in message
    assert f"{UNREACHABLE_MIRROR}/{path.name}" in message  # the URL to fetch by hand
    assert "Traceback" not in message
    checkpoints = torch_home / "hub" / "checkpoints"
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []  # nothing half-written


def test_damaged_weights_file_says_to_delete_it(torch_home):
    path = weights_path("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RetinaError, match="delete it"):
        build_model("resnet18", pretrained=True)


def test_weights_cli_reports_present_files_and_fails_clearly_offline(
    torch_home, monkeypatch, capsys
):
    path = weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    assert run_main(weights_main, ["resnet18"]) == 0
    assert str(path) in capsys.readouterr().out

    monkeypatch.setenv("RETINA_WEIGHTS_MIRROR", UNREACHABLE_MIRROR)
    assert run_main(weights_main, ["resnet18", "resnet50"]) == 2
    captured = capsys.readouterr()
    assert "already here" in captured.out
    assert captured.err.startswith("error: ")
    assert str(weights_path("resnet50")) in captured.err and "make weights" in captured.err

    assert run_main(weights_main, ["vgg16"]) == 2
    assert "vgg16" in capsys.readouterr().err
