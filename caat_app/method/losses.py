"""The clean loss (gradient g_c) and the adversarial losses (gradient g_a) of the method.

Each adversarial loss is an entry of `registry.LOSSES`; `adversarial_loss` and
`attack_objective` look it up by its config name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from caat_app.method.registry import LOSSES

Objective = Callable[[Tensor, Tensor], Tensor]


def _kl_rows(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(softmax(p) ‖ softmax(q)) per row, from log-softmaxes so it never takes log 0."""
    log_p = F.log_softmax(logits_p, dim=1)
    log_q = F.log_softmax(logits_q, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def clean_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy on clean inputs: the standard loss whose gradient is g_c."""
    return F.cross_entropy(logits, y)


def ce(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """Mean CE(logits_adv, y): Madry AT (`beta` unused)."""
    return F.cross_entropy(logits_adv, y)


def trades(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """beta · batch-mean KL(softmax(clean) ‖ softmax(adv)), TRADES' robust term alone.

    As in the official code (`core/utils/trades.py`), g_a is the gradient of the KL term
    only, with weight 1 there (β = 1 here by default); the gradient flows through both
    logits. TRADES' clean cross-entropy is g_c's job.
    """
    return beta * _kl_rows(logits_clean, logits_adv).mean()


def clp(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """beta · batch-mean ‖softmax(adv) − softmax(clean)‖₂: the official CLP (`core/utils/alp.py`).

    No cross-entropy term: the official g_a pairs the two predicted distributions only.
    """
    gap = F.softmax(logits_adv, dim=1) - F.softmax(logits_clean, dim=1)
    return beta * torch.linalg.vector_norm(gap, dim=1).mean()


def alp(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """Mean CE(logits_adv, y) + beta · batch-mean ‖clean − adv‖²₂ (adversarial logit pairing)."""
    pairing = (logits_clean - logits_adv).pow(2).sum(dim=1).mean()
    return F.cross_entropy(logits_adv, y) + beta * pairing


def adversarial_loss(
    kind: str, logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, beta: float
) -> Tensor:
    """The robust loss whose gradient is g_a, by its config name."""
    return LOSSES[kind].load()(logits_clean, logits_adv, y, beta)  # type: ignore[no-any-return]


def kl_to_clean(logits_clean: Tensor) -> Objective:
    """TRADES' attack objective: the summed KL from the (fixed) clean prediction."""
    target = logits_clean.detach()

    def objective(logits_adv: Tensor, y: Tensor) -> Tensor:
        del y  # the KL objective needs no labels
        return _kl_rows(target, logits_adv).sum()

    return objective


def attack_objective(kind: str, logits_clean: Tensor) -> Objective | None:
    """What the attack should ascend for this loss; None means summed cross-entropy."""
    loss = LOSSES[kind]
    if not loss.objective:
        return None
    from caat_app.registry import load

    return load(loss.objective)(logits_clean)  # type: ignore[no-any-return]
