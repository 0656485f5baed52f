"""Every evaluation attack, with the settings `caat eval` uses, on the same points.

Within budget and the valid range, never above clean accuracy, and a larger budget
never raises accuracy by more than noise: the promises the issue makes of each attack.
"""

from __future__ import annotations

import pytest
import torch

from caat_app.evalplan import EVAL_ATTACKS
from caat_app.evaluate import attack_batch

N = 60
NOISE = 2 / N  # two images: random starts and restarts differ between budgets


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", EVAL_ATTACKS)
def test_budget_range_clean_and_monotone(digits_linear: tuple, attack: str, norm: str) -> None:
    model, x_test, y_test = digits_linear
    x, y = x_test[:N], y_test[:N]
    small, large = (0.05, 0.15) if norm == "linf" else (0.3, 1.0)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    accuracies = []
    for eps in (small, large):
        torch.manual_seed(0)
        x_adv = attack_batch(attack, model, x, y, eps=eps, norm=norm)
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert size.max().item() <= eps * (1 + 1e-5) + 1e-6
        assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
        with torch.no_grad():
            accuracies.append((model(x_adv).argmax(1) == y).float().mean().item())
    assert max(accuracies) <= clean
    assert accuracies[1] <= accuracies[0] + NOISE
    assert accuracies[1] < clean  # the larger budget breaks something on this model
