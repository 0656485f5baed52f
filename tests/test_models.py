"""Models: shapes, the published parameter counts, and the running-stats-off BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from caat_app.models import BN_MODES, MODELS
from caat_app.models.build import build_model
from caat_app.models.layers import Normalize

CIFAR = {
    "in_channels": 3,
    "num_classes": 10,
    "image_size": 32,
    "mean": (0.5,) * 3,
    "std": (0.25,) * 3,
}
DIGITS = {"in_channels": 1, "num_classes": 10, "image_size": 8, "mean": (0.3,), "std": (0.4,)}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def wrn() -> nn.Module:
    return build_model("wrn28-10", **CIFAR)


@pytest.mark.parametrize("name", ["linear", "cnn"])
@pytest.mark.parametrize("bn", BN_MODES)
def test_small_models_on_digits_and_cifar(name: str, bn: str) -> None:
    for shape in (DIGITS, CIFAR):
        model = build_model(name, bn=bn, **shape)
        assert isinstance(model[0], Normalize)
        x = torch.rand(4, shape["in_channels"], shape["image_size"], shape["image_size"])
        assert model(x).shape == (4, 10)


@pytest.mark.parametrize(("name", "expected"), [("resnet18", 11_173_962), ("resnet34", 21_282_122)])
def test_resnets(name: str, expected: int) -> None:
    model = build_model(name, **CIFAR)
    assert abs(_params(model) - expected) / expected < 0.01
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_wrn(wrn: nn.Module) -> None:
    assert abs(_params(wrn) - 36_479_194) / 36_479_194 < 0.01
    wrn.eval()
    with torch.no_grad():
        assert wrn(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_normalize_is_first_and_has_no_parameters() -> None:
    model = build_model("linear", **DIGITS)
    norm = model[0]
    assert isinstance(norm, Normalize) and not list(norm.parameters())
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(norm(x), (x - 0.3) / 0.4)
    assert {"0.mean", "0.std"} <= set(model.state_dict())


def test_batchstats_uses_batch_statistics_in_eval() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", bn="batchstats", **DIGITS).eval()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.running_mean is None and m.running_var is None for m in bns)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        alone = model(x[:4])
        mixed = model(torch.cat([x[:4], 3 * x[4:]]))[:4]
    assert not torch.allclose(alone, mixed, atol=1e-4)

    standard = build_model("cnn", bn="standard", **DIGITS).eval()
    with torch.no_grad():
        torch.testing.assert_close(standard(x[:4]), standard(torch.cat([x[:4], 3 * x[4:]]))[:4])


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="linear, cnn, resnet18, resnet34, wrn28-10"):
        build_model("vgg16", **CIFAR)
    with pytest.raises(ValueError, match="standard, batchstats"):
        build_model("cnn", bn="group", **CIFAR)
    assert set(MODELS) >= {"linear", "cnn", "resnet18", "resnet34", "wrn28-10"}
