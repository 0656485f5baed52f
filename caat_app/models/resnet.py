"""The CIFAR ResNets (He et al. 2016): ResNet-18 and ResNet-34 with a 3×3 stem and no max-pool."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from caat_app.models.layers import NormLayer, conv_bn_relu


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
        self.stem = conv_bn_relu(in_channels, 64, 1, norm)
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


def resnet18(in_channels: int, num_classes: int, image_size: int, norm: NormLayer) -> nn.Module:
    del image_size
    return ResNet((2, 2, 2, 2), in_channels, num_classes, norm)


def resnet34(in_channels: int, num_classes: int, image_size: int, norm: NormLayer) -> nn.Module:
    del image_size
    return ResNet((3, 4, 6, 3), in_channels, num_classes, norm)
