"""A classifier by its registry name, with its data set's normalisation built in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from caat_app.models.layers import Normalize, norm_layer
from caat_app.models.registry import MODELS

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_app.data.splits import DataSplits


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
    """Build a classifier by its config name; it takes images in [0, 1]."""
    factory = MODELS[name].load()
    if len(mean) != in_channels:
        raise ValueError(f"mean/std have {len(mean)} channels but the images have {in_channels}")
    body = factory(in_channels, num_classes, image_size, norm_layer(bn))
    return nn.Sequential(Normalize(mean, std), body)


def build_for_run(config: RunConfig, data: DataSplits, device: torch.device) -> nn.Module:
    """The run's model for its data set, on the device (training and evaluation agree)."""
    model = build_model(
        config.model,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
        image_size=data.image_size,
        mean=data.mean,
        std=data.std,
        bn=config.bn,
    )
    return model.to(device)
