"""Attacks: budget, strength against known answers, and that they leave the model as found."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_helpers import Exploding, accuracy, size
from torch import Tensor, nn

from caat_app.attacks import TRAINING_ATTACKS as ATTACKS
from caat_app.attacks import run_attack
from caat_app.attacks.common import attack_mode, normalize_l2, project, random_init
from caat_app.attacks.fgsm import fgsm
from caat_app.attacks.pgd import pgd
from caat_app.models.build import build_model

EPS = {"linf": 0.1, "l2": 1.0}


def _loss(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def _attack(name: str, model: nn.Module, x: Tensor, y: Tensor, norm: str) -> Tensor:
    eps = EPS[norm]
    return run_attack(name, model, x, y, eps=eps, alpha=eps / 4, steps=10, norm=norm)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ATTACKS)
def test_stays_in_budget_and_box(digits_model, name: str, norm: str) -> None:
    model, x, y = digits_model
    x_adv = _attack(name, model, x, y, norm)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (size(x_adv - x, norm) <= EPS[norm] + 1e-6).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ATTACKS)
def test_untargeted_raises_loss_and_lowers_accuracy(digits_model, name: str, norm: str) -> None:
    model, x, y = digits_model
    clean_acc = accuracy(model, x, y)
    assert clean_acc > 0.9
    x_adv = _attack(name, model, x, y, norm)
    assert _loss(model, x_adv, y) > _loss(model, x, y) + 0.5
    assert accuracy(model, x_adv, y) < clean_acc - 0.2


def test_pgd_is_at_least_as_strong_as_fgsm(digits_model) -> None:
    model, x, y = digits_model
    x_pgd = pgd(model, x, y, eps=0.1, alpha=0.025, steps=20)
    x_fgsm = fgsm(model, x, y, eps=0.1)
    assert _loss(model, x_pgd, y) >= _loss(model, x_fgsm, y) - 1e-4


def _two_class_linear() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """A two-class linear model, its effective pixel-space weights, and points mid-box."""
    torch.manual_seed(1)
    model = build_model(
        "linear", in_channels=1, num_classes=2, image_size=4, mean=(0.5,), std=(0.25,)
    )
    linear = model[1][1]
    w_eff = linear.weight.detach() / 0.25  # Normalize divides by std
    x = 0.3 + 0.4 * torch.rand(32, 1, 4, 4)  # eps 0.1 never reaches the [0, 1] edges
    y = torch.randint(0, 2, (32,))
    return model, w_eff, x, y


@pytest.mark.parametrize("random_start", [True, False])
def test_linf_pgd_reaches_closed_form_worst_case(random_start: bool) -> None:
    model, w_eff, x, y = _two_class_linear()
    eps = 0.1
    with torch.no_grad():
        logits = model(x)
    margin = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, 1 - y[:, None]).squeeze(1)
    dw = w_eff[y] - w_eff[1 - y]
    worst = F.softplus(-(margin - eps * dw.abs().sum(1)))  # CE of two classes = softplus(−m)
    x_adv = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=20, random_start=random_start)
    with torch.no_grad():
        achieved = F.cross_entropy(model(x_adv), y, reduction="none")
    torch.testing.assert_close(achieved, worst, atol=1e-4, rtol=1e-4)
    # The optimum is the corner −ε·sign(Δw).
    expected = x - eps * dw.sign().view_as(x)
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)


def test_l2_pgd_reaches_closed_form_worst_case() -> None:
    model, w_eff, x, y = _two_class_linear()
    eps = 0.5
    with torch.no_grad():
        logits = model(x)
    margin = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, 1 - y[:, None]).squeeze(1)
    dw = w_eff[y] - w_eff[1 - y]
    worst = F.softplus(-(margin - eps * dw.norm(dim=1)))
    x_adv = pgd(
        model,
        x,
        y,
        eps=eps,
        alpha=eps / 4,
        steps=10,
        norm="l2",
        random_start=False,
        clip=(-10.0, 10.0),
    )
    with torch.no_grad():
        achieved = F.cross_entropy(model(x_adv), y, reduction="none")
    torch.testing.assert_close(achieved, worst, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_raises_target_probability(digits_model, norm: str) -> None:
    model, x, y = digits_model
    target = (y + 1) % 10
    eps = EPS[norm]
    x_adv = pgd(model, x, target, eps=eps, alpha=eps / 4, steps=10, norm=norm, targeted=True)
    with torch.no_grad():
        before = model(x).softmax(1).gather(1, target[:, None]).squeeze(1)
        after = model(x_adv).softmax(1).gather(1, target[:, None]).squeeze(1)
    assert after.mean() > before.mean() + 0.1
    assert (after > before).float().mean() > 0.95


def _model_with_grads() -> nn.Module:
    torch.manual_seed(2)
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.4,))
    model.train()
    model[1].fc.eval()  # a mixed state must come back exactly as it was
    model[1].features[0][0].weight.requires_grad_(False)
    x = torch.rand(8, 1, 8, 8)
    F.cross_entropy(model(x), torch.arange(8)).backward()
    return model


def _snapshot(model: nn.Module) -> tuple[list[bool], list[tuple[bool, int | None, Tensor | None]]]:
    """Every module's training flag, and each parameter's requires_grad and grad (ptr, value)."""
    modes = [m.training for m in model.modules()]
    params = [
        (
            p.requires_grad,
            None if p.grad is None else p.grad.data_ptr(),
            None if p.grad is None else p.grad.clone(),
        )
        for p in model.parameters()
    ]
    return modes, params


def _assert_same(before: tuple, after: tuple) -> None:
    assert before[0] == after[0]
    for (r0, p0, g0), (r1, p1, g1) in zip(before[1], after[1], strict=True):
        assert (r0, p0) == (r1, p1)
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)


@pytest.mark.parametrize("name", ATTACKS)
def test_model_state_and_grads_are_restored(name: str) -> None:
    model = _model_with_grads()
    before = _snapshot(model)
    seen: list[bool] = []

    def spy(module: nn.Module, args: tuple) -> None:
        # Every forward inside the attack: eval mode, no parameter needs a gradient.
        seen.append(model.training or any(p.requires_grad for p in model.parameters()))

    hook = model.register_forward_pre_hook(spy)
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    run_attack(name, model, x, y, eps=0.1, alpha=0.05, steps=3, norm="linf")
    hook.remove()
    assert seen and not any(seen)
    _assert_same(before, _snapshot(model))


def test_state_restored_on_exception() -> None:
    model = _model_with_grads()
    before = _snapshot(model)

    def boom(logits: Tensor, y: Tensor) -> Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        pgd(
            model,
            torch.rand(2, 1, 8, 8),
            torch.arange(2),
            eps=0.1,
            alpha=0.1,
            steps=2,
            loss_fn=boom,
        )
    _assert_same(before, _snapshot(model))
    with pytest.raises(KeyError), attack_mode(model):
        raise KeyError("inside")
    _assert_same(before, _snapshot(model))


def test_works_under_no_grad(digits_model) -> None:
    model, x, y = digits_model
    with torch.no_grad():
        x_adv = pgd(model, x[:16], y[:16], eps=0.1, alpha=0.05, steps=3)
    assert not torch.equal(x_adv, x[:16])


@pytest.mark.parametrize("name", ATTACKS)
def test_eps_zero_returns_input(name: str) -> None:
    x = torch.rand(3, 1, 8, 8)
    out = run_attack(
        name,
        Exploding(),
        x,
        torch.zeros(3, dtype=torch.long),
        eps=0.0,
        alpha=0.1,
        steps=5,
        norm="linf",
    )
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_steps_zero_returns_input(digits_model) -> None:
    model, x, y = digits_model
    assert torch.equal(pgd(model, x, y, eps=0.1, alpha=0.1, steps=0), x)


def test_helpers() -> None:
    torch.manual_seed(3)
    x = torch.rand(64, 3, 4, 4)
    for norm in ("linf", "l2"):
        delta = random_init(x, 0.5, norm)
        assert (size(delta, norm) <= 0.5 + 1e-6).all()
        assert (size(project(delta * 10, 0.5, norm), norm) <= 0.5 + 1e-6).all()
    g = torch.zeros(2, 3, 4, 4)
    g[1] = 2.0
    unit = normalize_l2(g)
    assert torch.equal(unit[0], torch.zeros(3, 4, 4))
    assert unit[1].norm().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="linf"):
        project(g, 0.1, "l3")


def test_unknown_attack() -> None:
    with pytest.raises(ValueError, match="pgd, fgsm"):
        run_attack(
            "cw",
            nn.Identity(),
            torch.rand(1, 1, 2, 2),
            torch.zeros(1, dtype=torch.long),
            eps=0.1,
            alpha=0.1,
            steps=1,
            norm="linf",
        )


def test_a_registry_entry_cannot_misspell_a_training_option() -> None:
    from caat_app.attacks.registry import Attack

    with pytest.raises(ValueError, match="unknown training options"):
        Attack("bim", "a typo", "caat_app.attacks.pgd:pgd", training=("alpha", "step"))
