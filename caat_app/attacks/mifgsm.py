"""Momentum iterative FGSM (Dong et al. 2018) in L∞ or L2."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from caat_app.attacks.common import (
    TINY,
    LossFn,
    attack_mode,
    check_norm,
    per_sample,
    project,
    step_direction,
    summed_cross_entropy,
)
from caat_app.attacks.pgd import start_point


def _l1_normalize(g: Tensor) -> Tensor:
    """Per-sample unit L1 gradient, so every step adds the same weight to the momentum."""
    l1 = g.abs().flatten(1).sum(1).clamp_min(TINY)
    return g / per_sample(l1, g)


def mifgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    decay: float = 1.0,
    norm: str = "linf",
    targeted: bool = False,
    start_noise: float = 0.0,
    loss_fn: LossFn | None = None,
    clip: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Return detached adversarial images inside the ε-ball around ``x`` and inside ``clip``.

    The momentum ``g ← decay·g + ∇/‖∇‖₁`` smooths the step direction across iterations,
    which escapes the poor local maxima plain I-FGSM gets stuck in. Steps are
    ``alpha·sign(g)`` (L∞) or ``alpha·g/‖g‖₂`` (L2), ``alpha`` defaults to ``eps/steps``, and
    there is no random start (as in the paper) unless ``start_noise`` asks for TRADES'
    small Gaussian one (`pgd.start_point`). Untargeted ascends ``loss_fn(logits, y)``
    (summed cross-entropy by default); targeted descends it towards the classes ``y``.
    """
    check_norm(norm)
    x = x.detach()
    if eps == 0 or steps == 0:
        return x.clone()
    step = eps / steps if alpha is None else alpha
    objective = loss_fn if loss_fn is not None else summed_cross_entropy
    sign = -1.0 if targeted else 1.0
    lo, hi = clip
    x_adv = start_point(x, eps, norm, random_start=False, start_noise=start_noise, clip=clip)
    momentum = torch.zeros_like(x)
    with attack_mode(model), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = objective(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            momentum = decay * momentum + _l1_normalize(grad)
            x_adv = x_adv.detach() + (sign * step) * step_direction(momentum, norm)
            x_adv = (x + project(x_adv - x, eps, norm)).clamp(lo, hi)
    return x_adv.detach()
