"""What the attack tests share: accuracy, correctness, perturbation size, a model never to call."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per sample: does the model classify it right?"""
    with torch.no_grad():
        return model(x).argmax(1) == y


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return correct(model, x, y).float().mean().item()


def size(delta: Tensor, norm: str) -> Tensor:
    """Per-sample perturbation size in the attack's norm."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


class Exploding(nn.Module):
    """A model for cases that must not run it (a zero budget, no steps)."""

    def forward(self, x: Tensor) -> Tensor:
        raise AssertionError("this attack must not call the model here")
