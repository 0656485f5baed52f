"""AutoPGD: budget, strength against PGD and closed-form answers, DLR values, reproducibility."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_helpers import correct, size
from torch import Tensor, nn

from caat_app.attacks.apgd import apgd, apgd_checkpoints, dlr_loss, dlr_targeted_loss
from caat_app.attacks.pgd import pgd
from caat_app.models.build import build_model

EPS = {"linf": 0.1, "l2": 1.0}
N = 120  # test points attacked per case: enough to compare attacks, small enough to be fast


def test_dlr_losses_by_hand() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 4.0, 1.0]])
    y = torch.tensor([0, 1, 2])
    # Sorted: π1 = 3, π3 = 0 (rows 0, 1); π1 = 4, π3 = 1 (row 2).
    expected = torch.tensor([-(3.0 - 1.0) / 3.0, -(1.0 - 3.0) / 3.0, -(4.0 - 2.0) / 3.0])
    torch.testing.assert_close(dlr_loss(logits, y), expected)
    target = torch.tensor([2, 3, 0])
    # Denominator z_π1 − (z_π3 + z_π4) / 2: 3 − (0 − 1)/2 = 3.5; 4 − (1 + 0)/2 = 3.5.
    expected_t = torch.tensor([-(3.0 - 0.0) / 3.5, -(1.0 + 1.0) / 3.5, -(4.0 - 0.0) / 3.5])
    torch.testing.assert_close(dlr_targeted_loss(logits, y, target), expected_t)
    # Invariant to shifting and scaling the logits.
    torch.testing.assert_close(dlr_loss(5 * logits + 7, y), expected)


def test_checkpoints_match_reference() -> None:
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    for steps in (1, 3, 10, 37):
        points = apgd_checkpoints(steps)
        assert points == sorted(set(points)) and all(0 < w <= steps for w in points)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("variant", ["apgd-ce", "apgd-dlr", "apgd-t"])
def test_budget_box_and_strength(digits_model, norm: str, variant: str) -> None:
    model, x, y = digits_model
    eps = EPS[norm]
    loss, targeted = ("dlr", variant == "apgd-t") if variant != "apgd-ce" else ("ce", False)
    x_adv = apgd(
        model, x, y, eps=eps, norm=norm, loss=loss, targeted=targeted, steps=20, target_classes=3
    )
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (size(x_adv - x, norm) <= eps + 1e-6).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    clean = correct(model, x, y).float().mean()
    assert clean > 0.9
    assert correct(model, x_adv, y).float().mean() < clean - 0.2


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_at_least_as_strong_as_pgd10(digits_model, norm: str) -> None:
    model, x, y = digits_model
    eps = EPS[norm] / 2  # a budget where neither attack breaks everything
    x_pgd = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10, norm=norm)
    x_apgd = apgd(model, x, y, eps=eps, norm=norm)
    robust_pgd = int(correct(model, x_pgd, y).sum())
    robust_apgd = int(correct(model, x_apgd, y).sum())
    assert robust_pgd < len(y)  # the comparison means something
    assert robust_apgd <= robust_pgd + 1


def test_deterministic_for_a_seed(digits_model) -> None:
    model, x, y = digits_model
    state = torch.random.get_rng_state()
    a = apgd(model, x, y, eps=0.05, steps=10, restarts=2)
    b = apgd(model, x, y, eps=0.05, steps=10, restarts=2)
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    c = apgd(model, x, y, eps=0.05, steps=10, restarts=2, seed=1)
    assert not torch.equal(a, c)


def test_misclassified_points_unchanged_and_eps_zero(digits_model) -> None:
    model, x, y = digits_model
    y_wrong = y.clone()
    y_wrong[::2] = (y[::2] + 1) % 10  # every other label is wrong: misclassified at start
    wrong = ~correct(model, x, y_wrong)
    assert wrong.sum() >= len(y) // 2
    for targeted in (False, True):
        x_adv = apgd(model, x, y_wrong, eps=0.1, steps=10, targeted=targeted, target_classes=2)
        assert torch.equal(x_adv[wrong], x[wrong])
        assert not torch.equal(x_adv[~wrong], x[~wrong])
    out = apgd(model, x, y, eps=0.0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_no_host_reads(digits_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """No .item(), bool() or .tolist() on a tensor anywhere: the device is never waited on
    from Python (the one ``nonzero`` per run that picks the still-robust points aside)."""
    model, x, y = digits_model

    def refuse(*_: object) -> None:
        raise AssertionError("host read inside apgd")

    for name in ("item", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    apgd(model, x, y, eps=0.1, steps=10, restarts=2)
    apgd(model, x, y, eps=0.1, steps=10, targeted=True, target_classes=2, norm="l2")


def test_restarts_never_hurt(digits_model) -> None:
    model, x, y = digits_model
    one = apgd(model, x, y, eps=0.03, steps=10, restarts=1)
    three = apgd(model, x, y, eps=0.03, steps=10, restarts=3)
    assert correct(model, three, y).sum() <= correct(model, one, y).sum()


def _two_class_linear() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """A two-class linear model, its effective pixel-space weights, and points mid-box."""
    torch.manual_seed(1)
    model = build_model(
        "linear", in_channels=1, num_classes=2, image_size=4, mean=(0.5,), std=(0.25,)
    )
    w_eff = model[1][1].weight.detach() / 0.25  # Normalize divides by std
    x = 0.3 + 0.4 * torch.rand(32, 1, 4, 4)  # eps 0.1 never reaches the [0, 1] edges
    y = torch.randint(0, 2, (32,))
    return model, w_eff, x, y


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.5)])
def test_reaches_closed_form_worst_case_on_linear_model(norm: str, eps: float) -> None:
    model, w_eff, x, y = _two_class_linear()
    with torch.no_grad():
        logits = model(x)
    margin = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, 1 - y[:, None]).squeeze(1)
    dw = w_eff[y] - w_eff[1 - y]
    shift = dw.abs().sum(1) if norm == "linf" else dw.norm(dim=1)
    worst = F.softplus(-(margin - eps * shift))  # CE of two classes = softplus(−margin)
    x_adv = apgd(model, x, y, eps=eps, norm=norm, clip=(-10.0, 10.0))
    with torch.no_grad():
        achieved = F.cross_entropy(model(x_adv), y, reduction="none")
    start_ok = margin > 0
    assert 0 < start_ok.sum() < len(y)
    torch.testing.assert_close(achieved[start_ok], worst[start_ok], atol=1e-4, rtol=1e-4)
    assert torch.equal(x_adv[~start_ok], x[~start_ok])
    if norm == "linf":  # the optimum is the corner −ε·sign(Δw)
        expected = x - eps * dw.sign().view_as(x)
        torch.testing.assert_close(x_adv[start_ok], expected[start_ok], atol=1e-6, rtol=0)


class _Flat(nn.Module):
    """Equal logits everywhere: a zero gradient, so APGD never leaves its random start."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, :3] * 0.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_at_full_radius(norm: str) -> None:
    """As AutoAttack's: the L∞ start lies on the surface of the ε-box (a uniform draw over
    its largest entry), the L2 start on the ε-sphere, both spread over the whole image."""
    torch.manual_seed(3)
    x = torch.rand(64, 1, 8, 8)
    y = torch.zeros(64, dtype=torch.long)  # the first of equal logits: correct, so attacked
    x_adv = apgd(_Flat(), x, y, eps=0.3, norm=norm, steps=3, clip=(-10.0, 10.0))
    torch.testing.assert_close(size(x_adv - x, norm), torch.full((64,), 0.3))
    delta = (x_adv - x).flatten(1)
    assert (delta != 0).all()
    if norm == "linf":  # one coordinate at ±ε, the rest uniform inside
        assert ((delta.abs() > 0.3 * (1 - 1e-6)).sum(1) == 1).all()
        assert delta.abs().mean().item() == pytest.approx(0.15, abs=0.01)


def test_leaves_model_as_found() -> None:
    torch.manual_seed(2)
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.4,))
    model.train()
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    with torch.no_grad():
        apgd(model, x, y, eps=0.1, steps=5, loss="dlr")
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))


def test_rejects_bad_settings(digits_model) -> None:
    model, x, y = digits_model
    with pytest.raises(ValueError, match="ce, dlr"):
        apgd(model, x, y, eps=0.1, loss="cw")
    with pytest.raises(ValueError, match="linf"):
        apgd(model, x, y, eps=0.1, norm="l3")
    two = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=">= 3 classes"):
        apgd(two, torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), eps=0.1, loss="dlr")
