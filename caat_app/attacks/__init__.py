"""Functional adversarial attacks on models that take images in [0, 1]."""

from __future__ import annotations

from torch import Tensor, nn

from caat_app.attacks._common import (
    NORMS,
    LossFn,
    attack_mode,
    normalize_l2,
    project,
    random_init,
)
from caat_app.attacks.fgsm import fgsm
from caat_app.attacks.pgd import pgd
from caat_app.config import ATTACKS

__all__ = [
    "ATTACKS",
    "NORMS",
    "LossFn",
    "attack_mode",
    "fgsm",
    "normalize_l2",
    "pgd",
    "project",
    "random_init",
    "run_attack",
]


def run_attack(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    loss_fn: LossFn | None = None,
) -> Tensor:
    """Pick an attack by its config name; fgsm ignores ``alpha`` and ``steps``."""
    if name == "pgd":
        return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, loss_fn=loss_fn)
    if name == "fgsm":
        return fgsm(model, x, y, eps=eps, norm=norm, loss_fn=loss_fn)
    raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
