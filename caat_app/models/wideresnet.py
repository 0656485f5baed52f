"""Wide ResNets (Zagoruyko & Komodakis 2016): WRN-28-10, the paper's largest model."""

from __future__ import annotations

from torch import Tensor, nn

from caat_app.models.layers import NormLayer


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


def wrn28_10(in_channels: int, num_classes: int, image_size: int, norm: NormLayer) -> nn.Module:
    del image_size
    return WideResNet(28, 10, in_channels, num_classes, norm)
