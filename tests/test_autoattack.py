"""AutoAttack ensemble: budget, stage order, strength against its members, determinism."""

from __future__ import annotations

import importlib
import inspect
from itertools import pairwise

import pytest
import torch
from attack_helpers import correct, size
from torch import Tensor, nn

from caat_app.attacks.apgd import apgd
from caat_app.attacks.autoattack import autoattack
from caat_app.attacks.fab import fab
from caat_app.attacks.square import square

EPS = {"linf": 0.08, "l2": 0.5}  # budgets where the ensemble breaks some points, not all
N = 120
FAST = {"steps": 10, "queries": 100, "target_classes": 3}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_budget_box_and_stages(digits_model, norm: str) -> None:
    model, x, y = digits_model
    eps = EPS[norm]
    x_adv, acc = autoattack(model, x, y, eps=eps, norm=norm, **FAST)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (size(x_adv - x, norm) <= eps + 1e-6).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert list(acc) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    values = list(acc.values())
    assert all(b <= a for a, b in pairwise(values))
    assert values[0] > 0.9 and values[-1] < values[0]  # the attack did something
    # The reported number is the accuracy on the returned points.
    assert acc["square"] == pytest.approx(correct(model, x_adv, y).float().mean().item())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_at_least_as_strong_as_each_member(digits_model, norm: str) -> None:
    model, x, y = digits_model
    eps = EPS[norm]
    _, acc = autoattack(model, x, y, eps=eps, norm=norm, **FAST)
    s, k = FAST["steps"], FAST["target_classes"]
    alone = {
        "apgd-ce": apgd(model, x, y, eps=eps, norm=norm, steps=s),
        "apgd-t": apgd(model, x, y, eps=eps, norm=norm, steps=s, targeted=True, target_classes=k),
        "fab-t": fab(model, x, y, eps=eps, norm=norm, steps=s, targeted=True, target_classes=k),
        "square": square(model, x, y, eps=eps, norm=norm, queries=FAST["queries"]),
    }
    for name, x_adv in alone.items():
        single = correct(model, x_adv, y).float().mean().item()
        assert acc["square"] <= single + 1 / N, name


def test_fast_runs_only_apgd(digits_model, monkeypatch: pytest.MonkeyPatch) -> None:
    aa = importlib.import_module("caat_app.attacks.autoattack")  # the module, not the function

    model, x, y = digits_model

    def refuse(*_: object, **__: object) -> Tensor:
        raise AssertionError("fast AutoAttack must not run FAB or Square")

    monkeypatch.setattr(aa, "fab", refuse)
    monkeypatch.setattr(aa, "square", refuse)
    _, acc = autoattack(model, x, y, eps=EPS["linf"], version="fast", **FAST)
    assert list(acc) == ["clean", "apgd-ce", "apgd-t"]


def test_square_member_has_autoattack_settings(
    digits_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AutoAttack's Square: p_init 0.8, one run of 5000 queries by default, p's schedule not
    rescaled to the query budget (the reference's ``resc_schedule=False``)."""
    aa = importlib.import_module("caat_app.attacks.autoattack")  # the module, not the function

    model, x, y = digits_model
    seen: list[dict[str, object]] = []
    real_square = aa.square

    def spy(m: nn.Module, xs: Tensor, ys: Tensor, **kw: object) -> Tensor:
        seen.append(kw)
        return real_square(m, xs, ys, **kw)

    monkeypatch.setattr(aa, "square", spy)
    autoattack(model, x, y, eps=EPS["linf"], **FAST)
    assert len(seen) == 1
    assert seen[0]["p_init"] == 0.8 and seen[0]["rescale_schedule"] is False
    assert seen[0]["queries"] == FAST["queries"]
    assert inspect.signature(autoattack).parameters["queries"].default == 5000


def test_each_attack_sees_only_still_robust_points(
    digits_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    aa = importlib.import_module("caat_app.attacks.autoattack")  # the module, not the function

    model, x, y = digits_model
    seen: list[int] = []
    real_apgd = aa.apgd

    def spy(m: nn.Module, xs: Tensor, ys: Tensor, **kw: object) -> Tensor:
        seen.append(xs.shape[0])
        return real_apgd(m, xs, ys, **kw)

    monkeypatch.setattr(aa, "apgd", spy)
    _, acc = autoattack(model, x, y, eps=EPS["linf"], version="fast", **FAST)
    assert seen == [round(acc["clean"] * N), round(acc["apgd-ce"] * N)]


def test_misclassified_points_untouched(digits_model) -> None:
    model, x, y = digits_model
    y_wrong = y.clone()
    y_wrong[::2] = (y[::2] + 1) % 10
    wrong = ~correct(model, x, y_wrong)
    assert wrong.sum() >= N // 2
    x_adv, acc = autoattack(model, x, y_wrong, eps=EPS["linf"], **FAST)
    assert torch.equal(x_adv[wrong], x[wrong])
    assert acc["clean"] <= 0.5
    # Robust points the ensemble could not break come back unchanged too.
    robust = correct(model, x_adv, y_wrong)
    assert torch.equal(x_adv[robust], x[robust])


def test_deterministic_for_a_seed(digits_model) -> None:
    model, x, y = digits_model
    state = torch.random.get_rng_state()
    a, acc_a = autoattack(model, x, y, eps=EPS["l2"], norm="l2", **FAST)
    b, acc_b = autoattack(model, x, y, eps=EPS["l2"], norm="l2", **FAST)
    assert torch.equal(a, b) and acc_a == acc_b
    assert torch.equal(torch.random.get_rng_state(), state)
    c, _ = autoattack(model, x, y, eps=EPS["l2"], norm="l2", seed=1, **FAST)
    assert not torch.equal(a, c)


def test_leaves_model_as_found(digits_model) -> None:
    model, x, y = digits_model
    model.train()
    try:
        autoattack(model, x[:8], y[:8], eps=0.05, version="fast", **FAST)
        assert model.training and all(p.requires_grad for p in model.parameters())
    finally:
        model.eval()


def test_rejects_bad_settings(digits_model) -> None:
    model, x, y = digits_model
    with pytest.raises(ValueError, match="standard, fast"):
        autoattack(model, x, y, eps=0.1, version="plus")
    with pytest.raises(ValueError, match="linf"):
        autoattack(model, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="at least one"):
        autoattack(model, x[:0], y[:0], eps=0.1)
