"""Every evaluation attack, with the settings `caat eval` uses, on the same points.

Within budget and the valid range, never above clean accuracy, and a larger budget
never raises accuracy by more than noise: the promises the issue makes of each attack.
"""

from __future__ import annotations

import pytest
import torch
from attack_helpers import size

from caat_app.evaluation.plan import EVAL_ATTACKS
from caat_app.evaluation.runner import attack_batch

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
        assert size(x_adv - x, norm).max().item() <= eps * (1 + 1e-5) + 1e-6
        assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
        with torch.no_grad():
            accuracies.append((model(x_adv).argmax(1) == y).float().mean().item())
    assert max(accuracies) <= clean
    assert accuracies[1] <= accuracies[0] + NOISE
    assert accuracies[1] < clean  # the larger budget breaks something on this model


@pytest.mark.parametrize("batch_dependent", [False, True])
def test_only_correct_points_are_attacked(
    digits_linear: tuple, monkeypatch: pytest.MonkeyPatch, batch_dependent: bool
) -> None:
    import caat_app.evaluation.runner as ev

    model, x_test, y_test = digits_linear
    x, y = x_test[:300], y_test[:300]
    seen: list[int] = []
    real = ev.attack_batch

    def spy(name: str, model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, **kw):
        seen.append(len(yb))
        return real(name, model, xb, yb, **kw)

    monkeypatch.setattr(ev, "attack_batch", spy)
    clean = ev.accuracy(model, x, y, None, eps=0.0, norm="linf")
    attacked = ev.accuracy(
        model, x, y, "fgsm", eps=0.1, norm="linf", batch_dependent=batch_dependent
    )
    assert clean is not None and attacked is not None and attacked <= clean < 1.0
    with torch.no_grad():
        right = (model(x).argmax(1) == y).tolist()
    assert len(y) > 256  # two batches
    if batch_dependent:  # whole fixed batches of 256, then the rest
        assert seen == [256, len(y) - 256]
    else:  # per batch, only what the model gets right
        assert seen == [sum(right[:256]), sum(right[256:])]
