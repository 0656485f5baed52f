"""Functional adversarial attacks on models that take images in [0, 1].

One file per family: `fgsm`, `pgd`, `mifgsm`, `apgd` (AutoPGD with CE, DLR and targeted
DLR), `fab` (minimal-norm, untargeted and targeted), `square` (black-box) and the
`autoattack` ensemble (standard: APGD-CE, APGD-T, FAB-T, Square; fast: the first two). Each is
`attack(model, x, y, *, eps, norm, ...) -> x_adv`; `run_attack` picks a training attack
by its config name.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from caat_app.attacks.apgd import apgd, dlr_loss, dlr_targeted_loss
from caat_app.attacks.autoattack import autoattack
from caat_app.attacks.common import (
    NORMS,
    LossFn,
    attack_mode,
    normalize_l2,
    project,
    random_init,
)
from caat_app.attacks.fab import fab, fab_distance
from caat_app.attacks.fgsm import fgsm
from caat_app.attacks.mifgsm import mifgsm
from caat_app.attacks.pgd import pgd
from caat_app.attacks.square import square
from caat_app.config import ATTACKS

__all__ = [
    "ATTACKS",
    "NORMS",
    "LossFn",
    "apgd",
    "attack_mode",
    "autoattack",
    "dlr_loss",
    "dlr_targeted_loss",
    "fab",
    "fab_distance",
    "fgsm",
    "mifgsm",
    "normalize_l2",
    "pgd",
    "project",
    "random_init",
    "run_attack",
    "square",
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
    """A training attack by its config name (fgsm ignores `alpha` and `steps`).

    AutoPGD sets its own step sizes and objective (`alpha` and `loss_fn` are not used);
    its random start is drawn from the global generator, so a seeded run repeats.
    """
    if name == "pgd":
        return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, loss_fn=loss_fn)
    if name == "fgsm":
        return fgsm(model, x, y, eps=eps, norm=norm, loss_fn=loss_fn)
    if name == "mifgsm":
        return mifgsm(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, loss_fn=loss_fn)
    if name in {"apgd-ce", "apgd-dlr", "apgd-t"}:
        seed = int(torch.randint(0, 2**31 - 1, ()))  # a CPU draw: no device sync
        return apgd(
            model,
            x,
            y,
            eps=eps,
            norm=norm,
            loss="dlr" if name == "apgd-dlr" else "ce",
            targeted=name == "apgd-t",
            steps=steps,
            seed=seed,
        )
    raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
