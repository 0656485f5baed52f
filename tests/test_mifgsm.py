"""MI-FGSM: budget, strength on a trained model, targeting, and leaving the model as found."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_helpers import Exploding, accuracy, size
from torch import Tensor, nn

from caat_app.attacks.fgsm import fgsm
from caat_app.attacks.mifgsm import mifgsm
from caat_app.models.build import build_model

EPS = {"linf": 0.1, "l2": 1.0}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_stays_in_budget_and_box(digits_model, norm: str) -> None:
    model, x, y = digits_model
    x_adv = mifgsm(model, x, y, eps=EPS[norm], norm=norm)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (size(x_adv - x, norm) <= EPS[norm] + 1e-6).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_lowers_accuracy(digits_model, norm: str) -> None:
    model, x, y = digits_model
    clean = accuracy(model, x, y)
    assert clean > 0.9
    assert accuracy(model, mifgsm(model, x, y, eps=EPS[norm], norm=norm), y) < clean - 0.3


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_raises_target_probability(digits_model, norm: str) -> None:
    model, x, y = digits_model
    target = (y + 1) % 10
    x_adv = mifgsm(model, x, target, eps=EPS[norm], norm=norm, targeted=True)
    with torch.no_grad():
        before = model(x).softmax(1).gather(1, target[:, None]).squeeze(1)
        after = model(x_adv).softmax(1).gather(1, target[:, None]).squeeze(1)
    assert after.mean() > before.mean() + 0.1
    assert (after > before).float().mean() > 0.95


def test_one_step_is_fgsm(digits_model) -> None:
    """With one step the momentum is the L1-normalised gradient, whose sign is FGSM's."""
    model, x, y = digits_model
    assert torch.equal(mifgsm(model, x, y, eps=0.1, steps=1), fgsm(model, x, y, eps=0.1))


def test_momentum_changes_the_path(digits_model) -> None:
    model, x, y = digits_model
    with_momentum = mifgsm(model, x, y, eps=0.1, steps=10, alpha=0.02, decay=1.0)
    without = mifgsm(model, x, y, eps=0.1, steps=10, alpha=0.02, decay=0.0)
    assert not torch.equal(with_momentum, without)


def test_model_state_and_grads_are_restored() -> None:
    torch.manual_seed(2)
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.4,))
    model.train()
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    seen: list[bool] = []

    def spy(logits: Tensor, target: Tensor) -> Tensor:
        seen.append(model.training or any(p.requires_grad for p in model.parameters()))
        return F.cross_entropy(logits, target, reduction="sum")

    x_adv = mifgsm(model, x, y, eps=0.1, steps=3, loss_fn=spy)
    assert seen and not any(seen)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert not torch.equal(x_adv, x)


def test_works_under_no_grad(digits_model) -> None:
    model, x, y = digits_model
    with torch.no_grad():
        x_adv = mifgsm(model, x[:16], y[:16], eps=0.1, steps=3)
    assert not torch.equal(x_adv, x[:16])


@pytest.mark.parametrize(("eps", "steps"), [(0.0, 10), (0.1, 0)])
def test_zero_budget_returns_input(eps: float, steps: int) -> None:
    x = torch.rand(3, 1, 8, 8)
    out = mifgsm(Exploding(), x, torch.zeros(3, dtype=torch.long), eps=eps, steps=steps)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_unknown_norm() -> None:
    with pytest.raises(ValueError, match="linf"):
        mifgsm(
            nn.Identity(), torch.rand(1, 4), torch.zeros(1, dtype=torch.long), eps=0.1, norm="l3"
        )
