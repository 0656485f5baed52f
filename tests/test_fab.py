"""FAB: exact minimal distances on linear models, the exact box projections, budget and box."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_helpers import accuracy, size
from torch import Tensor, nn

from caat_app.attacks.fab import fab, fab_distance, project_onto_hyperplane_box

WIDE = (-100.0, 100.0)  # a box that never binds, so the closed forms hold
DUAL = {"linf": 1, "l2": 2}  # ‖·‖_q of the weight difference, q the dual norm
# The refined point lies this far past the boundary, relative to its distance: the margin a
# converged run of the reference keeps, (eta − 1)·(1 − beta) at the defaults 1.05 and 0.9.
MARGIN = (1.05 - 1) * (1 - 0.9)
# The bisection's resolution: 10 halvings of a segment at most ~2% longer than the distance.
RESOLUTION = 2**-10 * 1.02


def _assert_margin_past(found: Tensor, exact: Tensor) -> None:
    """``found`` is the exact distance plus the margin, to the bisection's resolution (and
    to float rounding, for points that start within rounding of a boundary)."""
    assert (found >= exact * (1 + MARGIN) * (1 - 1e-5) - 1e-6).all()
    assert (found <= exact * (1 + MARGIN) * (1 + RESOLUTION) + 1e-6).all()


def _linear(classes: int, seed: int, n: int = 64) -> tuple[nn.Module, Tensor, Tensor]:
    """A linear classifier on 4×4 images and points mid-box, labelled with its own prediction."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, classes))
    x = 0.3 + 0.4 * torch.rand(n, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _closed_form(model: nn.Module, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """min over j ≠ y of |f_y − f_j| / ‖w_y − w_j‖_q: the exact distance out of class y."""
    lin = model[1]
    with torch.no_grad():
        logits = model(x)
    w = lin.weight.detach()
    margin = logits.gather(1, y[:, None]) - logits  # (B, K)
    dw = (w[y][:, None, :] - w[None]).norm(p=DUAL[norm], dim=-1)  # (B, K)
    dist = margin / dw.clamp_min(1e-12)
    dist[torch.arange(len(y)), y] = float("inf")
    return dist.min(1).values


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("classes", [2, 3])
def test_finds_closed_form_distance(norm: str, classes: int) -> None:
    model, x, y = _linear(classes, seed=classes)
    exact = _closed_form(model, x, y, norm)
    found = fab_distance(model, x, y, norm=norm, steps=20, clip=WIDE)
    _assert_margin_past(found, exact)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_core_loop_is_close_without_refinement(norm: str) -> None:
    model, x, y = _linear(3, seed=5)
    exact = _closed_form(model, x, y, norm)
    found = fab_distance(model, x, y, norm=norm, steps=20, clip=WIDE, refine_steps=0)
    assert (found >= exact * (1 - 1e-5)).all()  # never below the true minimum
    assert (found <= exact * 1.01).all()  # the eta overshoot costs well under 1%


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_over_all_classes_matches_closed_form(norm: str) -> None:
    model, x, y = _linear(3, seed=7)
    exact = _closed_form(model, x, y, norm)
    found = fab_distance(
        model, x, y, norm=norm, steps=20, clip=WIDE, targeted=True, target_classes=9
    )
    _assert_margin_past(found, exact)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_hits_target_within_eps(norm: str) -> None:
    """Target plane within ε, its foot in the target's region: FAB-T lands exactly there."""
    model, x, y = _linear(3, seed=11, n=128)
    w, bias = model[1].weight.detach(), model[1].bias.detach()
    with torch.no_grad():
        logits = model(x)
    target = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    rows = torch.arange(len(y))
    dw = w[target] - w[y]
    gap = logits[rows, y] - logits[rows, target]
    dist_t = gap / dw.norm(p=DUAL[norm], dim=1)
    step = dw.sign() if norm == "linf" else dw / dw.norm(dim=1, keepdim=True)
    third = 3 - y - target
    ok = torch.ones_like(y, dtype=torch.bool)
    for past in (1.0, 1 + MARGIN):  # the exact projection onto f_t = f_y, and past it
        foot_logits = (x.flatten(1) + past * dist_t[:, None] * step) @ w.T + bias
        ok &= foot_logits[rows, target] >= foot_logits[rows, third] + 1e-3
    eps = 0.05 if norm == "linf" else 0.3
    ok &= dist_t < eps * 0.99
    assert ok.sum() >= 5  # the case is exercised
    x_adv = fab(
        model, x, y, eps=eps, norm=norm, steps=20, clip=WIDE, targeted=True, target_classes=1
    )
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    assert (pred[ok] == target[ok]).all()
    _assert_margin_past(size(x_adv - x, norm)[ok], dist_t[ok])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_refined_points_keep_a_margin_past_the_boundary(norm: str) -> None:
    """Two classes, so the logit margin is linear along the segment: the refined point's
    wrong-side margin is at least MARGIN times the clean margin, however finely bisected."""
    model, x, y = _linear(2, seed=37)
    x_adv = fab(model, x, y, eps=10.0, norm=norm, steps=20, clip=WIDE)
    with torch.no_grad():
        clean, adv = model(x), model(x_adv)
    rows = torch.arange(len(y))
    m_clean = clean[rows, y] - clean[rows, 1 - y]  # > 0: every label is the prediction
    m_adv = adv[rows, y] - adv[rows, 1 - y]
    assert (m_clean > 0).all()
    assert (-m_adv >= MARGIN * m_clean * 0.99).all()
    # Pulled back by the margin, the point is still on the wrong side (or on the boundary).
    back = x + (x_adv - x) / (1 + MARGIN)
    with torch.no_grad():
        m_back = (model(back)[rows, y] - model(back)[rows, 1 - y]) / m_clean
    assert (m_back <= 1e-5).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_margin_never_costs_a_point_within_eps(norm: str) -> None:
    """Points whose distance is within ε but within the margin of it still break at ε."""
    model, x, y = _linear(3, seed=41, n=128)
    exact = _closed_form(model, x, y, norm)
    eps = float(exact.median()) * (1 + MARGIN / 2)  # the median point: its margin won't fit
    within = exact < eps * (1 - 2 * RESOLUTION)
    assert (within & (exact * (1 + MARGIN) > eps)).sum() >= 1  # the case is exercised
    x_adv = fab(model, x, y, eps=eps, norm=norm, steps=20, clip=WIDE)
    assert (size(x_adv - x, norm) <= eps + 1e-6).all()
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    assert (pred[within] != y[within]).all()


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_budget_box_and_accuracy(norm: str, targeted: bool) -> None:
    model, x, _ = _linear(3, seed=13, n=96)
    torch.manual_seed(0)
    y = torch.randint(0, 3, (96,))  # some points start misclassified
    x[:8] = torch.rand(8, 1, 4, 4)  # and some lie near the box edges
    clean = accuracy(model, x, y)
    exact = _closed_form(model, x, y, norm)  # a lower bound once the box binds
    accs = []
    for eps in (0.02, 0.05, 0.2) if norm == "linf" else (0.1, 0.3, 1.0):
        x_adv = fab(
            model,
            x,
            y,
            eps=eps,
            norm=norm,
            steps=20,
            targeted=targeted,
            target_classes=2,
            restarts=2,
        )
        assert x_adv.shape == x.shape and not x_adv.requires_grad
        assert (size(x_adv - x, norm) <= eps + 1e-6).all()
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        moved = (x_adv != x).flatten(1).any(1)
        with torch.no_grad():
            pred = model(x_adv).argmax(1)
        assert (pred[moved] != y[moved]).all()  # only successful points are changed
        accs.append(accuracy(model, x_adv, y))
        # Inside the box every point closer than ε to the boundary is broken.
        assert (pred == y)[8:][exact[8:] < eps * 0.999].sum() == 0
    assert accs[0] <= clean and accs == sorted(accs, reverse=True)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_box_binding_distance_is_feasible_and_small(norm: str) -> None:
    """With [0, 1] binding, every reported distance belongs to a real, in-box adversarial."""
    model, x, y = _linear(3, seed=17)
    x = torch.rand_like(x)
    with torch.no_grad():
        y = model(x).argmax(1)
    exact = _closed_form(model, x, y, norm)
    dist = fab_distance(model, x, y, norm=norm, steps=30)
    finite = torch.isfinite(dist)
    assert finite.float().mean() > 0.9
    assert (dist[finite] >= exact[finite] * (1 - 1e-4)).all()
    x_adv = fab(model, x, y, eps=float(dist[finite].max()) + 1e-6, norm=norm, steps=30)
    assert accuracy(model, x_adv[finite], y[finite]) == 0.0


def _box_projection_reference(t: Tensor, w: Tensor, b: Tensor, norm: str) -> Tensor:
    """Brute force by bisection on the multiplier, for the exact-projection check."""
    out = []
    for ti, wi, bi in zip(t.double(), w.double(), b.double(), strict=True):
        gap = bi - wi @ ti
        s = 1.0 if gap >= 0 else -1.0
        lo_m, hi_m = 0.0, 1e6

        def step(m: float, ti: Tensor = ti, wi: Tensor = wi, s: float = s) -> Tensor:
            d = m * wi.sign() * s if norm == "linf" else m * wi * s
            return (ti + d).clamp(0, 1) - ti

        for _ in range(200):
            mid = (lo_m + hi_m) / 2
            if s * (wi @ step(mid)) < abs(gap):
                lo_m = mid
            else:
                hi_m = mid
        out.append(step(hi_m))
    return torch.stack(out).to(t.dtype)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_exact_box_projection(norm: str) -> None:
    torch.manual_seed(19)
    t = torch.rand(40, 30, dtype=torch.float64)
    w = torch.randn(40, 30, dtype=torch.float64)
    w[:, :3] = 0.0  # zero weights must not move
    b = (w * t).sum(1) + torch.randn(40, dtype=torch.float64) * torch.linspace(0.1, 20, 40)
    d = project_onto_hyperplane_box(t, w, b, norm)
    expected = _box_projection_reference(t, w, b, norm)
    torch.testing.assert_close(d, expected, atol=1e-7, rtol=0)
    assert ((t + d) >= -1e-12).all() and ((t + d) <= 1 + 1e-12).all()
    assert (d[:, :3] == 0).all()
    reachable = (b - (w * t).sum(1)).abs() < (w * (d)).sum(1).abs() + 1e-9
    torch.testing.assert_close(((w * (t + d)).sum(1))[reachable], b[reachable])


def test_projection_general_box_and_gap_zero() -> None:
    torch.manual_seed(23)
    t = torch.rand(6, 10, dtype=torch.float64) * 4 - 2
    w = torch.randn(6, 10, dtype=torch.float64)
    b = (w * t).sum(1)
    b[3:] += 0.5
    for norm in ("linf", "l2"):
        d = project_onto_hyperplane_box(t, w, b, norm, clip=(-2.0, 2.0))
        assert (d[:3] == 0).all()
        torch.testing.assert_close((w * (t + d)).sum(1), b)
        assert ((t + d).abs() <= 2 + 1e-12).all()


def test_eps_zero_and_edge_cases() -> None:
    class Exploding(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise AssertionError("eps 0 must not call the model")

    x = torch.rand(3, 1, 4, 4)
    out = fab(Exploding(), x, torch.zeros(3, dtype=torch.long), eps=0.0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    model, x, y = _linear(2, seed=29, n=4)
    wrong = 1 - y
    assert torch.equal(fab_distance(model, x, wrong, steps=5), torch.zeros(4))
    assert torch.equal(fab(model, x, wrong, eps=0.1, steps=5), x)
    with pytest.raises(ValueError, match="linf"):
        fab(model, x, y, eps=0.1, norm="l1")


def test_model_state_restored_and_no_param_grads() -> None:
    torch.manual_seed(31)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)
    )
    model.train()
    x, y = torch.rand(5, 1, 4, 4), torch.arange(5) % 3
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    stats = model[2].running_mean.clone()
    fab(model, x, y, eps=0.3, steps=3, targeted=True, target_classes=2)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
    assert torch.equal(stats, model[2].running_mean)  # eval mode inside: stats untouched
