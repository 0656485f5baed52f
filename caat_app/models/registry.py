"""The model registry: every architecture a run can train, by its config name.

Add a model: a factory `(in_channels, num_classes, image_size, norm) -> nn.Module` in a
module of this package, one entry here, and its tests (tests/test_models.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from caat_app.registry import Entry, Registry

BN_MODES = ("standard", "batchstats")
"""BatchNorm with running statistics, or without (the paper's: batch statistics always)."""


@dataclass(frozen=True)
class Model(Entry):
    """An architecture; `impl` names its factory."""


MODELS: Registry[Model] = Registry(
    "model",
    [
        Model("linear", "logistic regression", "caat_app.models.small:linear"),
        Model("cnn", "small CNN, for small images", "caat_app.models.small:small_cnn"),
        Model("resnet18", "ResNet-18, CIFAR stem", "caat_app.models.resnet:resnet18"),
        Model("resnet34", "ResNet-34, CIFAR stem", "caat_app.models.resnet:resnet34"),
        Model("wrn28-10", "WideResNet-28-10", "caat_app.models.wideresnet:wrn28_10"),
    ],
)
