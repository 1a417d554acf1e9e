"""The architectures the harness builds, by name, without importing torch.

    from retina.archs import ARCH_NAMES   # ("resnet18", "resnet34", "resnet50", "resnet101")

`retina.models` maps each name to its torchvision builder and ImageNet weights; a study file is
validated against these names before anything loads torch (`python -m study.sweep bad.yaml`
answers in a fraction of a second, not after torch's ~4 s import).
"""

ARCH_NAMES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101")
