"""A classifier by its registry name, with its input normalisation built in.

A CNN normalises with its data set's statistics; a transformer with the statistics its
registry entry names (ImageNet's for the pretrained ones), so a weights file sees the
inputs it was trained on while attacks keep working in [0, 1] pixel space. A
transformer's base weights come from a file (`weights`), then its PEFT mode decides
what trains (`models.adapters`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from caat_app.errors import ConfigError
from caat_app.models.adapters import apply_peft
from caat_app.models.layers import Normalize, norm_layer
from caat_app.models.registry import INPUT_NORMS, MODELS, transformer_complaint
from caat_app.models.transformers import CHANNELS
from caat_app.models.weights import BaseWeights, load_base_weights

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_app.data.splits import DataSplits


class Classifier(nn.Sequential):
    """`Normalize` then the body; also says where its frozen base came from (`base`, None
    when not from a file) and its PEFT mode, which decide what a checkpoint keeps."""

    def __init__(
        self, normalize: Normalize, body: nn.Module, *, base: BaseWeights | None, peft: str
    ) -> None:
        super().__init__(normalize, body)
        self.base = base
        self.peft = peft


def _input_stats(
    name: str, in_channels: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[Sequence[float], Sequence[float]]:
    """The statistics the model normalises with; a transformer takes grey or RGB images."""
    entry = MODELS[name]
    if entry.transformer and in_channels not in (1, CHANNELS):
        raise ConfigError(f"{name} takes grey or RGB images; these have {in_channels} channels")
    if entry.normalization != "data":
        return INPUT_NORMS[entry.normalization]
    if len(mean) != in_channels:
        raise ValueError(f"mean/std have {len(mean)} channels but the images have {in_channels}")
    return mean, std


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    bn: str = "standard",
    weights: str | None = None,
    peft: str = "full",
    adapter_reduction: int = 16,
    lora_rank: int = 8,
    grad_checkpointing: bool = False,
) -> Classifier:
    """Build a classifier by its config name; it takes images in [0, 1].

    For a transformer: `weights` loads its base from a file (its head stays new), then
    `peft` freezes all but what that mode trains; `grad_checkpointing` recomputes each
    block's activations in the backward pass instead of keeping them.
    """
    entry = MODELS[name]
    factory = entry.load()
    mean, std = _input_stats(name, in_channels, mean, std)
    for field, asked in (("weights", weights), ("peft", peft != "full")):
        if asked and not entry.transformer:
            raise ConfigError(transformer_complaint(field, name))
    body = factory(in_channels, num_classes, image_size, norm_layer(bn))
    base = None
    if weights is not None:
        base = load_base_weights(body, weights, model=name, family=entry.family)
    if entry.transformer:
        body = apply_peft(body, peft, reduction=adapter_reduction, rank=lora_rank)
        if grad_checkpointing:
            body.set_grad_checkpointing(True)
    return Classifier(Normalize(mean, std), body, base=base, peft=peft)


def build_for_run(config: RunConfig, data: DataSplits, device: torch.device) -> Classifier:
    """The run's model for its data set, on the device (training and evaluation agree)."""
    model = build_model(
        config.model,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
        image_size=data.image_size,
        mean=data.mean,
        std=data.std,
        bn=config.bn,
        weights=config.weights,
        peft=config.peft,
        adapter_reduction=config.adapter_reduction,
        lora_rank=config.lora_rank,
        grad_checkpointing=config.grad_checkpointing,
    )
    return model.to(device)
