"""Pieces every architecture shares: input normalisation inside the model, the BatchNorm mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from caat_app.models.registry import BN_MODES

NormLayer = Callable[[int], nn.Module]


class Normalize(nn.Module):
    """Per-channel (x − mean) / std, kept in the model so attacks work in pixel space.

    A grey image (one channel) given three channels' statistics comes out as RGB: the
    subtraction broadcasts it, exactly as repeating it three times would (transformers).
    """

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


def norm_layer(bn: str) -> NormLayer:
    """BatchNorm factory; ``batchstats`` keeps no running stats, so eval uses batch statistics."""
    if bn == "standard":
        return nn.BatchNorm2d
    if bn == "batchstats":
        return lambda c: nn.BatchNorm2d(c, track_running_stats=False)
    raise ValueError(f"unknown bn mode {bn!r}; choose one of {', '.join(BN_MODES)}")


def conv_bn_relu(c_in: int, c_out: int, stride: int, norm: NormLayer) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        norm(c_out),
        nn.ReLU(inplace=True),
    )
