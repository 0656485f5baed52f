"""Small models for small images: logistic regression and a three-block CNN."""

from __future__ import annotations

from torch import Tensor, nn

from caat_app.models.layers import NormLayer, conv_bn_relu


def linear(in_channels: int, num_classes: int, image_size: int, norm: NormLayer) -> nn.Module:
    """Logistic regression on the flattened image (the paper's Section 3 model)."""
    del norm  # nothing to normalise inside a linear map
    features = in_channels * image_size * image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head: fast enough to train on a laptop CPU."""

    def __init__(self, in_channels: int, num_classes: int, norm: NormLayer) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, 16, 1, norm),
            conv_bn_relu(16, 32, 2, norm),
            conv_bn_relu(32, 64, 2, norm),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def small_cnn(in_channels: int, num_classes: int, image_size: int, norm: NormLayer) -> nn.Module:
    del image_size  # the pooling head takes any size
    return SmallCNN(in_channels, num_classes, norm)
