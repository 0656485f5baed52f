"""Projected gradient descent (Madry et al.) in L∞ or L2."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from caat_app.attacks.common import (
    LossFn,
    attack_mode,
    check_norm,
    per_sample,
    project,
    random_init,
    runner_up,
    step_direction,
    summed_cross_entropy,
)


def start_point(
    x: Tensor,
    eps: float,
    norm: str,
    *,
    random_start: bool,
    start_noise: float,
    clip: tuple[float, float],
) -> Tensor:
    """Where the ascent starts: ``x + start_noise·N(0, 1)`` when ``start_noise`` > 0, else a
    uniform draw from the ε-ball (``random_start``), else ``x`` itself.

    The small Gaussian start is TRADES' (0.001·N(0, 1)): a KL objective measured against
    the prediction at ``x`` has a zero gradient at ``x``, so an attack starting there would
    stay put (MI-FGSM) or take ``sign()`` of rounding noise (FGSM).
    """
    if start_noise > 0:
        return (x + start_noise * torch.randn_like(x)).clamp(*clip)
    if random_start:
        return (x + random_init(x, eps, norm)).clamp(*clip)
    return x.clone()


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str = "linf",
    targeted: bool = False,
    random_start: bool = True,
    start_noise: float = 0.0,
    loss_fn: LossFn | None = None,
    clip: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Return detached adversarial images inside the ε-ball around ``x`` and inside ``clip``.

    Untargeted ascends ``loss_fn(logits, y)`` (summed cross-entropy by default);
    targeted descends it towards the classes ``y``. ``start_noise``: see `start_point`.
    """
    check_norm(norm)
    x = x.detach()
    if eps == 0 or steps == 0:
        return x.clone()
    objective = loss_fn if loss_fn is not None else summed_cross_entropy
    sign = -1.0 if targeted else 1.0
    lo, hi = clip
    x_adv = start_point(x, eps, norm, random_start=random_start, start_noise=start_noise, clip=clip)
    with attack_mode(model), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = objective(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + (sign * alpha) * step_direction(grad, norm)
            x_adv = (x + project(x_adv - x, eps, norm)).clamp(lo, hi)
    return x_adv.detach()


def pgd_targeted(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    target: str = "runner-up",
) -> Tensor:
    """Targeted PGD towards the runner-up class: the strongest single target, APGD-T's first.

    A point the model already gets wrong stays as it is (a target could only "fix" it).
    """
    if target != "runner-up":
        raise ValueError(f"unknown PGD target {target!r}; the one choice is runner-up")
    with torch.no_grad():
        logits = model(x)
    towards = runner_up(logits, y)
    adv = pgd(
        model,
        x,
        towards,
        eps=eps,
        alpha=alpha,
        steps=steps,
        norm=norm,
        targeted=True,
        random_start=random_start,
    )
    wrong = per_sample(logits.argmax(1) != y, x)
    return torch.where(wrong, x, adv)
