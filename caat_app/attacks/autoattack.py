"""AutoAttack (Croce & Hein 2020): a fixed, parameter-free ensemble that gives the number to quote.

A single attack can be fooled by a model that masks its gradients or saturates its loss;
the ensemble mixes losses (CE, targeted DLR), a minimal-norm attack (FAB-T) and a
gradient-free one (Square), so a point counts as robust only if all of them fail.

``standard`` runs APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square (5000 queries);
``fast`` runs APGD-CE then APGD-T. Each attack sees only the points every earlier attack
failed on, and per sample the first successful adversarial is kept. On a model whose
predictions depend on the batch (BatchNorm on batch statistics) each attack meets those
points inside the whole batch, the broken ones in place, and every stage is judged on the
whole batch it leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from caat_app.attacks.apgd import apgd
from caat_app.attacks.common import (
    attack_mode,
    check_norm,
    is_batch_dependent,
    per_sample,
    settle,
    subset_model,
)
from caat_app.attacks.fab import fab
from caat_app.attacks.square import square

VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "fast": ("apgd-ce", "apgd-t"),
}

_Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _members(
    *,
    eps: float,
    norm: str,
    seed: int,
    clip: tuple[float, float],
    steps: int,
    queries: int,
    target_classes: int,
) -> dict[str, _Attack]:
    """The ensemble's attacks with AutoAttack's settings (one restart each, shared seed)."""
    common: dict[str, Any] = {"eps": eps, "norm": norm, "seed": seed, "clip": clip}
    targets: dict[str, Any] = {"targeted": True, "target_classes": target_classes}
    return {
        "apgd-ce": partial(apgd, loss="ce", steps=steps, **common),
        "apgd-t": partial(apgd, steps=steps, **targets, **common),
        "fab-t": partial(fab, steps=steps, **targets, **common),
        # AutoAttack's Square: p_init 0.8, one restart, p's schedule not rescaled to queries.
        "square": partial(square, queries=queries, p_init=0.8, rescale_schedule=False, **common),
    }


def _stages(
    model: nn.Module, x: Tensor, y: Tensor, stages: list[tuple[str, _Attack]]
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run the attacks in turn on the points still robust: (x_adv, robust count per stage).

    On a batch-dependent model each attack meets its points inside the whole batch, the
    broken ones in place, and a stage ends with the judgement of the whole batch it leaves.
    """
    shared = is_batch_dependent(model)
    out = x.clone()
    counts: dict[str, Tensor] = {}
    with attack_mode(model):
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        robust = clean.clone()
        counts["clean"] = robust.sum()
        for name, attack in stages:
            idx = robust.nonzero().squeeze(1)  # one host sync per attack, not per step
            if idx.numel() > 0:
                view = subset_model(model, out, idx, shared)
                adv = attack(view, x[idx], y[idx])
                with torch.no_grad():
                    fooled = view(adv).argmax(1) != y[idx]
                out[idx] = torch.where(per_sample(fooled, adv), adv, out[idx])
                if shared:
                    out, wrong = settle(model, x, out, y)
                    robust = clean & ~wrong
                else:
                    robust[idx] = ~fooled
            counts[name] = robust.sum()
    return out, counts


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    seed: int = 0,
    clip: tuple[float, float] = (0.0, 1.0),
    steps: int = 100,
    queries: int = 5000,
    target_classes: int = 9,
) -> tuple[Tensor, dict[str, float]]:
    """Return (x_adv, robust accuracy after each stage), stages in order, starting at "clean".

    The last value is the AutoAttack robust accuracy. Per sample ``x_adv`` holds the first
    adversarial any attack found, else ``x`` itself; points misclassified on ``x`` are
    returned unchanged and never attacked (on a batch-dependent model: a point is changed
    only if the returned batch misclassifies it, and the stages' numbers are that batch's
    judgement, so a later stage may save a point an earlier one broke). ``steps`` (APGD
    and FAB iterations), ``queries`` (Square) and ``target_classes`` default to the paper's
    budgets and are only lowered for tests. Reproducible for a ``seed``; the global RNG is
    left alone.
    """
    check_norm(norm)
    if version not in VERSIONS:
        raise ValueError(
            f"unknown AutoAttack version {version!r}; choose one of {', '.join(VERSIONS)}"
        )
    if x.shape[0] == 0:
        raise ValueError("autoattack needs at least one sample")
    x = x.detach()
    attacks = _members(
        eps=eps,
        norm=norm,
        seed=seed,
        clip=clip,
        steps=steps,
        queries=queries,
        target_classes=target_classes,
    )
    out, counts = _stages(model, x, y, [(name, attacks[name]) for name in VERSIONS[version]])
    n = x.shape[0]
    return out, {name: int(c) / n for name, c in counts.items()}


def autoattack_examples(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", version: str
) -> Tensor:
    """The ensemble's adversarial examples alone, as every other attack returns them."""
    x_adv, _ = autoattack(model, x, y, eps=eps, norm=norm, version=version)
    return x_adv
