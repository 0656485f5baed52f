"""Classifiers that take images in [0, 1]; each normalises its input in its first layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from caat_app.config import BN_MODES, MODELS

NormLayer = Callable[[int], nn.Module]


class Normalize(nn.Module):
    """Per-channel (x − mean) / std, kept in the model so attacks work in pixel space."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _norm_layer(bn: str) -> NormLayer:
    """BatchNorm factory; ``batchstats`` keeps no running stats, so eval uses batch statistics."""
    if bn == "standard":
        return nn.BatchNorm2d
    if bn == "batchstats":
        return lambda c: nn.BatchNorm2d(c, track_running_stats=False)
    raise ValueError(f"unknown bn mode {bn!r}; choose one of {', '.join(BN_MODES)}")


def _conv_bn_relu(c_in: int, c_out: int, stride: int, norm: NormLayer) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        norm(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head: fast enough to train on a laptop CPU."""

    def __init__(self, in_channels: int, num_classes: int, norm: NormLayer) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, 16, 1, norm),
            _conv_bn_relu(16, 32, 2, norm),
            _conv_bn_relu(32, 64, 2, norm),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


class BasicBlock(nn.Module):
    """The post-activation ResNet block (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: NormLayer) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), norm(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet: 3×3 stride-1 stem and no max-pool, so 32×32 inputs keep detail."""

    def __init__(
        self, blocks: Sequence[int], in_channels: int, num_classes: int, norm: NormLayer
    ) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, 64, 1, norm)
        layers: list[nn.Module] = []
        c_in = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(BasicBlock(c_in, width, stride, norm))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))))


class WideBlock(nn.Module):
    """Pre-activation wide block (Zagoruyko & Komodakis 2016), dropout 0."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: NormLayer) -> None:
        super().__init__()
        self.bn1 = norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        # With a projection shortcut the pre-activation feeds both branches.
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-k: three groups of (depth − 4) / 6 wide blocks, widths 16k, 32k, 64k."""

    def __init__(
        self, depth: int, widen: int, in_channels: int, num_classes: int, norm: NormLayer
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, width in enumerate(widths[1:]):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(WideBlock(c_in, width, stride, norm))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(
            norm(c_in), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.layers(self.stem(x))))


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    bn: str = "standard",
) -> nn.Module:
    """Build a classifier by its config name, with the data set's normalisation built in."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if len(mean) != in_channels:
        raise ValueError(f"mean/std have {len(mean)} channels but the images have {in_channels}")
    norm = _norm_layer(bn)
    body: nn.Module
    if name == "linear":
        body = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes)
        )
    elif name == "cnn":
        body = SmallCNN(in_channels, num_classes, norm)
    elif name == "resnet18":
        body = ResNet((2, 2, 2, 2), in_channels, num_classes, norm)
    elif name == "resnet34":
        body = ResNet((3, 4, 6, 3), in_channels, num_classes, norm)
    else:
        body = WideResNet(28, 10, in_channels, num_classes, norm)
    return nn.Sequential(Normalize(mean, std), body)
