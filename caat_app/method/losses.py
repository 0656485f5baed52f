"""The clean loss (gradient g_c) and the adversarial losses (gradient g_a) of the method."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from caat_app.config import LOSSES


def _check_kind(kind: str) -> None:
    """Fail with the choices, so a typo never trains with the wrong objective."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


def _kl_rows(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(softmax(p) ‖ softmax(q)) per row, from log-softmaxes so it never takes log 0."""
    log_p = F.log_softmax(logits_p, dim=1)
    log_q = F.log_softmax(logits_q, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def clean_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy on clean inputs: the standard loss whose gradient is g_c."""
    return F.cross_entropy(logits, y)


def adversarial_loss(
    kind: str, logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, beta: float
) -> Tensor:
    """The robust loss whose gradient is g_a.

    - ``ce``: mean CE(logits_adv, y) (Madry AT; ``beta`` unused).
    - ``trades``: beta · batch-mean KL(softmax(clean) ‖ softmax(adv)), TRADES' robust
      regulariser; the gradient flows through both logits.
    - ``clp``: mean CE(logits_adv, y) + beta · batch-mean ‖clean − adv‖²₂ (logit pairing).
    """
    _check_kind(kind)
    if kind == "ce":
        return F.cross_entropy(logits_adv, y)
    if kind == "trades":
        return beta * _kl_rows(logits_clean, logits_adv).mean()
    pairing = (logits_clean - logits_adv).pow(2).sum(dim=1).mean()
    return F.cross_entropy(logits_adv, y) + beta * pairing


def attack_objective(kind: str, logits_clean: Tensor) -> Callable[[Tensor, Tensor], Tensor] | None:
    """What the attack should ascend for this loss; None means summed cross-entropy.

    TRADES attacks its own regulariser: the summed KL from the (fixed) clean prediction.
    """
    _check_kind(kind)
    if kind != "trades":
        return None
    target = logits_clean.detach()

    def kl_to_clean(logits_adv: Tensor, y: Tensor) -> Tensor:
        del y  # the KL objective needs no labels
        return _kl_rows(target, logits_adv).sum()

    return kl_to_clean
