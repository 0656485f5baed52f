"""Fast gradient sign method (Goodfellow et al.); its L2 twin is the fast gradient method."""

from __future__ import annotations

from torch import Tensor, nn

from caat_app.attacks.common import LossFn
from caat_app.attacks.pgd import pgd


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    targeted: bool = False,
    start_noise: float = 0.0,
    loss_fn: LossFn | None = None,
    clip: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """One full-size step from the clean point: PGD with one step of size ε, no random start.

    With ``start_noise`` (TRADES' KL objective) the step is taken from a point that far
    from ``x``, and projected back into the ε-ball.
    """
    return pgd(
        model,
        x,
        y,
        eps=eps,
        alpha=eps,
        steps=1,
        norm=norm,
        targeted=targeted,
        random_start=False,
        start_noise=start_noise,
        loss_fn=loss_fn,
        clip=clip,
    )
