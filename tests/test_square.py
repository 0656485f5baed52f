"""Square Attack: budget, black-box only, strength, determinism, and its query accounting."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from attack_helpers import Exploding, accuracy, size
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from caat_app.attacks.square import l2_proposal, p_selection, square, square_pattern

EPS = {"linf": 0.1, "l2": 1.0}
N = 120  # test points per attack: enough to measure, few enough to stay fast


class _Recorder(nn.Module):
    """Wraps a model: records, per forward row, which clean point it belongs to and its logits."""

    def __init__(self, model: nn.Module, x: Tensor, eps: float) -> None:
        super().__init__()
        self.model, self.x, self.eps = model, x, eps
        self.calls: list[tuple[Tensor, Tensor]] = []
        self.grad_enabled: list[bool] = []

    def forward(self, z: Tensor) -> Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        dist = (z[:, None] - self.x[None]).flatten(2).abs().amax(2)  # L∞ to every clean point
        d, owner = dist.min(1)
        assert (d <= self.eps + 1e-6).all()
        logits = self.model(z)
        self.calls.append((owner, logits))
        return logits


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_stays_in_budget_and_box(digits_model, norm: str) -> None:
    model, x, y = digits_model
    x_adv = square(model, x, y, eps=EPS[norm], norm=norm, queries=50)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (size(x_adv - x, norm) <= EPS[norm] + 1e-5).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_lowers_accuracy(digits_model, norm: str) -> None:
    model, x, y = digits_model
    clean = accuracy(model, x, y)
    assert clean > 0.9
    assert accuracy(model, square(model, x, y, eps=EPS[norm], norm=norm, queries=300), y) < (
        clean - 0.3
    )


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_black_box_only(digits_model, monkeypatch: pytest.MonkeyPatch, norm: str) -> None:
    model, x, y = digits_model
    model.zero_grad(set_to_none=True)  # training left gradients behind
    rec = _Recorder(model, x, EPS[norm])  # an L2 step of size ε moves no pixel more than ε

    def forbidden(*args, **kwargs):
        raise AssertionError("the square attack must not ask for a gradient")

    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    x_in = x.clone().requires_grad_(True)
    square(rec, x_in, y, eps=EPS[norm], norm=norm, queries=30)
    assert rec.grad_enabled and not any(rec.grad_enabled)
    assert x_in.grad is None
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_deterministic_for_a_seed(digits_model, norm: str) -> None:
    model, x, y = digits_model
    first = square(model, x, y, eps=EPS[norm], norm=norm, queries=40, seed=7)
    again = square(model, x, y, eps=EPS[norm], norm=norm, queries=40, seed=7)
    other = square(model, x, y, eps=EPS[norm], norm=norm, queries=40, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fooled_points_are_untouched(digits_model, norm: str) -> None:
    model, x, y = digits_model
    with torch.no_grad():
        pred = model(x).argmax(1)
    wrong = pred != y
    assert wrong.any()
    x_adv = square(model, x, y, eps=EPS[norm], norm=norm, queries=30)
    assert torch.equal(x_adv[wrong], x[wrong])
    # Targeted: a point that already shows the target is left alone as well.
    target = torch.where(torch.arange(len(y)) % 2 == 0, pred, (pred + 1) % 10)
    x_t = square(model, x, target, eps=EPS[norm], norm=norm, queries=30, targeted=True)
    done = target == pred
    assert torch.equal(x_t[done], x[done])
    assert not torch.equal(x_t[~done], x[~done])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_query_budget(digits_model, norm: str) -> None:
    model, x, y = digits_model
    eps = 0.05 if norm == "linf" else 0.15  # small: most points survive the whole budget
    dist = (x[:, None] - x[None]).flatten(2).abs().amax(2) + 10 * torch.eye(len(x))
    assert dist.min() > 2 * eps  # every row can be traced back to one clean point
    rec = _Recorder(model, x, eps)
    queries = 25
    square(rec, x, y, eps=eps, norm=norm, queries=queries)
    counts: Counter[int] = Counter()
    fooled_at: dict[int, int] = {}
    for call, (owner, logits) in enumerate(rec.calls):
        assert owner.unique().numel() == owner.numel()  # a sample at most once per call
        margin_ok = logits.argmax(1) == y[owner]
        for i, ok in zip(owner.tolist(), margin_ok.tolist(), strict=True):
            assert i not in fooled_at, "a fooled sample was queried again"
            counts[i] += 1
            if not ok:
                fooled_at[i] = call
    assert len(rec.calls) <= queries + 1
    assert max(counts.values()) == queries + 1  # robust points use the whole budget
    assert set(counts) == set(range(len(x)))
    clean_wrong = [i for i in range(len(x)) if counts[i] == 1]
    assert all(fooled_at.get(i) == 0 for i in clean_wrong)


def test_p_schedule() -> None:
    assert p_selection(0.8, 0, 10000) == 0.8
    assert p_selection(0.8, 10, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 201, 10000) == 0.1
    assert p_selection(0.8, 9999, 10000) == pytest.approx(0.8 / 512)
    # Rescaled to a shorter run: iteration 2 of 1000 is iteration 20 of 10 000.
    assert p_selection(0.8, 2, 1000) == 0.4
    # AutoAttack's Square does not rescale: iteration 30 of 5000 is iteration 30.
    assert p_selection(0.8, 30, 5000) == 0.2  # rescaled: iteration 60 of 10 000
    assert p_selection(0.8, 30, 5000, rescale=False) == 0.4
    assert p_selection(0.8, 4500, 5000) == pytest.approx(0.8 / 512)
    assert p_selection(0.8, 4500, 5000, rescale=False) == pytest.approx(0.8 / 128)


def _rectangles(hh: int, ww: int) -> Tensor:
    """Closed form of the original's nested rectangles on an hh×ww block, unit L2: a cell
    at Chebyshev distance d from the centre (⌊hh/2⌋, ⌊ww/2⌋) lies in the rectangles d, d+1,
    …, K−1 (K = max(⌊hh/2⌋, ⌊ww/2⌋) + 1) and gets Σ 1/(k+1)² over them."""
    k_max = max(hh // 2, ww // 2) + 1
    out = torch.zeros(hh, ww, dtype=torch.float64)
    for r in range(hh):
        for c in range(ww):
            d = max(abs(r - hh // 2), abs(c - ww // 2))
            out[r, c] = sum(1.0 / (k + 1) ** 2 for k in range(d, k_max))
    return out / out.norm() if out.numel() else out


@given(st.integers(1, 15))
@settings(max_examples=15, deadline=None)
def test_square_pattern_is_the_two_halves_closed_form(s: int) -> None:
    expected = torch.cat((_rectangles(s // 2, s), -_rectangles(s - s // 2, s)))
    expected = expected / expected.norm()
    pattern = square_pattern(s).double()
    torch.testing.assert_close(pattern, expected, atol=1e-6, rtol=0)
    assert pattern.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert (pattern[: s // 2] > 0).all() and (pattern[s // 2 :] < 0).all()


def _side(p: float, h: int) -> int:
    """The L2 window side for p on an h×h image: round(√(p·h²)), at least 3, odd."""
    s = max(round(math.sqrt(p * h * h)), 3)
    return s + 1 if s % 2 == 0 else s


@pytest.mark.parametrize(("channels", "p", "seed"), [(1, 0.3, 0), (3, 0.1, 1), (3, 0.5, 2)])
def test_l2_proposal_from_zero_is_one_signed_pattern(channels: int, p: float, seed: int) -> None:
    """From δ = 0 all the budget goes to the first window: per channel ±(ε/√c)·pattern, the
    same orientation (the pattern or its transpose, drawn per sample) across channels,
    nothing elsewhere."""
    h, eps, n = 12, 0.7, 16
    s = _side(p, h)
    x = torch.full((n, channels, h, h), 0.5)
    gen = torch.Generator().manual_seed(seed)
    delta = l2_proposal(x, x.clone(), eps, p, gen, (-10.0, 10.0)) - x
    assert torch.allclose(size(delta, "l2"), torch.full((n,), eps), atol=1e-5)
    pattern = square_pattern(s) * eps / math.sqrt(channels)
    orientations = set()
    for sample in delta:
        rows = sample.abs().sum((0, 2)).nonzero().squeeze(1)
        cols = sample.abs().sum((0, 1)).nonzero().squeeze(1)
        assert len(rows) == len(cols) == s  # one s×s window, every cell of it moved
        top, left = int(rows[0]), int(cols[0])
        window = sample[:, top : top + s, left : left + s]
        signs = window[:, 0, 0].sign()[:, None, None]  # the pattern's corner is never 0
        fits = [torch.allclose(window, signs * pat, atol=1e-6) for pat in (pattern, pattern.T)]
        assert any(fits)
        orientations.add(fits.index(True))
    assert orientations == {0, 1}


@given(st.integers(0, 10_000), st.sampled_from([0.05, 0.2, 0.6]))
@settings(max_examples=20, deadline=None)
def test_l2_proposal_moves_mass_between_two_windows(seed: int, p: float) -> None:
    """One channel on the ε-sphere: the first window takes exactly the mass of both windows,
    so the perturbation stays on the sphere and every pixel outside them is untouched."""
    h, eps, n = 10, 1.0, 4
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 1, h, h), generator=gen)
    d0 = torch.randn((n, 1, h, h), generator=gen)
    best = x + eps * d0 / d0.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    new = l2_proposal(x, best, eps, p, gen, (-10.0, 10.0))
    assert torch.allclose(size(new - x, "l2"), torch.full((n,), eps), atol=1e-5)
    changed = ((new - best).abs() > 1e-6).flatten(1).sum(1)
    s = _side(p, h)
    assert (changed <= 2 * s * s).all()  # everything else kept its value: no rescaling
    assert (changed > 0).all()


def test_restores_training_mode(digits_model) -> None:
    model, x, y = digits_model
    model.train()
    try:
        square(model, x[:8], y[:8], eps=0.1, queries=5)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize(("eps", "queries"), [(0.0, 100), (0.1, 0)])
def test_zero_budget_returns_input(eps: float, queries: int) -> None:
    x = torch.rand(3, 1, 8, 8)
    out = square(Exploding(), x, torch.zeros(3, dtype=torch.long), eps=eps, queries=queries)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_rejects_non_images() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        square(nn.Identity(), torch.rand(2, 4), torch.zeros(2, dtype=torch.long), eps=0.1)
    with pytest.raises(ValueError, match="linf"):
        square(
            nn.Identity(),
            torch.rand(2, 1, 4, 4),
            torch.zeros(2, dtype=torch.long),
            eps=0.1,
            norm="l3",
        )
