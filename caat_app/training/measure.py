"""The trainer's per-epoch measurement: clean and PGD accuracy on validation and test.

Not to be confused with `caat_app.evaluation`, the reference-grade attack suite run on
a stored checkpoint: this is the quick PGD check each epoch that picks the best
checkpoint (on validation, never on test) and draws the accuracy charts. It follows the
suite's two rules that keep a number from overstating robustness: a point counts as
robust only when it is also right unattacked, and it is measured (attack included) in
float32, whatever precision the run trains in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from caat_app.attacks.pgd import pgd


def fixed_subset(x: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The first `n` of a fixed permutation: the same images every epoch and every run."""
    if n <= 0 or n >= len(y):
        return x, y
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n]
    order = order.to(x.device)
    return x[order], y[order]


def epoch_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    batch_size: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[float, float] | None:
    """Clean and PGD accuracy, counted on the device and read once at the end.

    A point is robust when it is right both unattacked and attacked: a PGD that fails
    to move a wrong point, or moves it onto its class, must not add robustness. Autocast
    is switched off, also when the caller trains under it: bf16 logits round small
    margins and weaken the attack's gradient. `should_stop` is asked before every batch
    (an evaluation of CIFAR's test set takes minutes); None means it said yes.
    """
    was_training = model.training
    model.eval()
    correct = torch.zeros(2, dtype=torch.long, device=x.device)
    try:
        for start in range(0, len(y), batch_size):
            if should_stop():
                return None
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            with torch.autocast(x.device.type, enabled=False):
                with torch.no_grad():
                    right = model(xb).argmax(1) == yb
                x_adv = pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, norm=norm)
                with torch.no_grad():
                    robust = right & (model(x_adv).argmax(1) == yb)
            correct[0] += right.sum()
            correct[1] += robust.sum()
    finally:
        model.train(was_training)
    clean, adv = (correct.double() / max(len(y), 1)).tolist()
    return clean, adv


def measure_splits(
    model: nn.Module, splits: Mapping[str, tuple[Tensor, Tensor]], **options: Any
) -> dict[str, float] | None:
    """`<split>_clean` and `<split>_adv` for each split in order; None when stopped midway.

    `options` are `epoch_accuracy`'s keywords, the same for every split.
    """
    results: dict[str, float] = {}
    for split, (x, y) in splits.items():
        accuracies = epoch_accuracy(model, x, y, **options)
        if accuracies is None:
            return None
        results[f"{split}_clean"], results[f"{split}_adv"] = accuracies
    return results
