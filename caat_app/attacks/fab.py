"""Fast Adaptive Boundary attack (Croce & Hein, 2020) in L∞ or L2, untargeted and targeted.

FAB looks for the *smallest* adversarial perturbation rather than the worst loss inside a
budget, so one run answers every ε at once and gives a per-sample distance to the boundary.
Each step linearises the classifier, projects onto the nearest linearised decision
hyperplane intersected with the image box (exactly, by sorting), and biases the step
towards the original point so the perturbation stays small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from caat_app.attacks.common import (
    TINY,
    attack_mode,
    check_norm,
    class_logit,
    is_batch_dependent,
    other_logits,
    per_sample,
    sample_size,
    seeded_start,
    settle,
    subset_model,
)


def _water_level(a: Tensor, r: Tensor, gap: Tensor) -> Tensor:
    """Smallest λ ≥ 0 with Σ_i a_i·min(λ, r_i) = gap, per row; inf when unreachable.

    Both box-constrained projections reduce to this monotone piecewise-linear equation;
    sorting the breakpoints r gives it exactly in O(n log n), without any iteration.
    """
    r_s, order = r.sort(dim=1)
    a_s = a.gather(1, order)
    tail = a_s.flip(1).cumsum(1).flip(1)  # Σ_{j≥k} a_j, exactly 0 past the last weight
    below = torch.nn.functional.pad((a_s * r_s).cumsum(1), (1, 0))  # Σ_{j<k} a_j r_j
    reach = below[:, 1:] + r_s * torch.nn.functional.pad(tail[:, 1:], (0, 1))  # g(r_k)
    k = (reach < gap[:, None]).sum(1, keepdim=True)  # first breakpoint reaching the gap
    n = r.shape[1]
    kc = k.clamp(max=n - 1)
    lam = (gap[:, None] - below.gather(1, kc)) / tail.gather(1, kc).clamp_min(TINY)
    lam = torch.where(k >= n, torch.full_like(lam, math.inf), lam.clamp_min(0.0))
    return lam.squeeze(1)


def project_onto_hyperplane_box(
    t: Tensor, w: Tensor, b: Tensor, norm: str, clip: tuple[float, float] = (0.0, 1.0)
) -> Tensor:
    """Smallest step d (L∞ or L2) with w·(t + d) = b and t + d inside ``clip``, per row.

    ``t`` and ``w`` are (B, n), ``b`` is (B,). When the box cannot reach the hyperplane the
    step goes to the box corner closest to it, as in the paper's reference code, so FAB
    still moves as far towards the boundary as the valid range allows.
    """
    check_norm(norm)
    lo, hi = clip
    gap = b - (w * t).sum(1)
    side = torch.where(gap < 0, -1.0, 1.0).to(w.dtype)[:, None]
    ws = w * side  # now ws·d must equal |gap| ≥ 0
    room = torch.where(ws > 0, hi - t, t - lo).clamp_min(0.0)
    active = ws.abs() > TINY
    if norm == "linf":
        # ‖d‖∞ ≤ λ: each coordinate moves min(λ, room) along sign(ws).
        a, r = ws.abs(), room
    else:
        # KKT: d = μ·ws, each coordinate clipped at its room, i.e. at μ = room/|ws|.
        a, r = ws * ws, (room / ws.abs().clamp_min(TINY)).clamp(max=1e12)
    a = torch.where(active, a, torch.zeros_like(a))
    r = torch.where(active, r, torch.zeros_like(r))
    lam = _water_level(a, r, gap.abs())
    step = torch.minimum(lam[:, None], r)
    d = ws.sign() * step if norm == "linf" else ws * step
    return torch.where(active, d, torch.zeros_like(d))


def _jacobian(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (B, K) and their input gradients (B, K, n): one backward per class."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    k = logits.shape[1]
    grads = [
        torch.autograd.grad(logits[:, c].sum(), x, retain_graph=c < k - 1)[0].flatten(1)
        for c in range(k)
    ]
    return logits.detach(), torch.stack(grads, 1)


def _nearest_plane(
    model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, norm: str
) -> tuple[Tensor, Tensor]:
    """Margin f_j − f_y and its gradient for the plane FAB heads to (nearest, or the target's)."""
    rows = torch.arange(x.shape[0], device=x.device)
    if target is not None:
        z = x.detach().requires_grad_(True)
        logits = model(z)
        diff = class_logit(logits, target) - class_logit(logits, y)
        (grad,) = torch.autograd.grad(diff.sum(), z)
        return diff.detach(), grad.flatten(1)
    logits, jac = _jacobian(model, x)
    df = logits - class_logit(logits, y)[:, None]
    dg = jac - jac[rows, y][:, None]
    dual = dg.abs().sum(-1) if norm == "linf" else dg.norm(p=2, dim=-1)
    dist = df.abs() / (dual + TINY)
    dist[rows, y] = math.inf
    j = dist.argmin(1)
    return df[rows, j], dg[rows, j]


def _restart_point(
    x0: Tensor, radius: Tensor, norm: str, gen: torch.Generator, clip: tuple[float, float]
) -> Tensor:
    """A point at ``radius`` from x0 (flat) in a random direction, as FAB's restarts use (the
    L∞ draw on the surface of its box, as in the FAB reference, so it starts at full radius).
    """
    return (x0 + radius[:, None] * seeded_start(x0, norm, gen)).clamp(*clip)


def _is_adv(model: nn.Module, xf: Tensor, shape: torch.Size, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(xf.view(shape)).argmax(1) != y


@dataclass(frozen=True)
class _Options:
    """How FAB searches: `fab`'s and `fab_distance`'s options but ε (defaults: AutoAttack's)."""

    norm: str
    steps: int
    restarts: int
    targeted: bool
    target_classes: int
    alpha_max: float
    eta: float
    beta: float
    seed: int
    clip: tuple[float, float]
    refine_steps: int


def _single_run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    target: Tensor | None,
    start: Tensor,
    shape: torch.Size,
    opts: _Options,
) -> tuple[Tensor, Tensor]:
    """One FAB run on flat (B, n) points: the smallest adversarial seen and its norm (inf: none)."""
    norm, clip, eta = opts.norm, opts.clip, opts.eta
    lo, hi = clip
    bsz = x0.shape[0]
    best = torch.full((bsz,), math.inf, device=x0.device, dtype=x0.dtype)
    adv = x0.clone()
    x1 = start
    for _ in range(opts.steps):
        df, w = _nearest_plane(model, x1.view(shape), y, target, norm)
        b = (w * x1).sum(1) - df  # the linearised plane: w·z = b
        d = project_onto_hyperplane_box(
            torch.cat((x1, x0)), torch.cat((w, w)), torch.cat((b, b)), norm, clip
        )
        d1, d2 = d[:bsz], d[bsz:]
        n1 = sample_size(d1, norm).clamp_min(1e-8)
        n2 = sample_size(d2, norm).clamp_min(1e-8)
        # Bias towards the projection from the original point, the more so the nearer the
        # plane is to x0 than to x1: this is what keeps the perturbation minimal.
        alpha = (n1 / (n1 + n2)).clamp(0.0, opts.alpha_max)[:, None]
        x1 = ((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp(lo, hi)
        found = _is_adv(model, x1, shape, y)
        size = sample_size(x1 - x0, norm)
        better = found & (size < best)
        best = torch.where(better, size, best)
        adv = torch.where(better[:, None], x1, adv)
        # Step back towards x0 after a success, so the next steps search closer to it.
        x1 = torch.where(found[:, None], x0 + opts.beta * (x1 - x0), x1)
    return adv, best


def _refine(
    model: nn.Module,
    x0: Tensor,
    adv: Tensor,
    best: Tensor,
    y: Tensor,
    *,
    shape: torch.Size,
    opts: _Options,
    cap: float | None,
) -> tuple[Tensor, Tensor]:
    """Bisect the segment x0 → adv for the boundary, then step a small margin past it.

    Not in the reference code, which keeps FAB's last successful iterate: converged, that
    one lies past the boundary by about (eta − 1)(1 − beta) of its norm (the eta overshoot
    of a step that starts a beta step-back inside). The bisection removes whatever more the
    search overshot; the point returned keeps that same relative margin past the boundary
    it found (never beyond ``cap``, i.e. ε), so that re-judging it with other rounding does
    not flip it back. It is checked: where it is not misclassified (a curved boundary, the
    box), FAB's own point stays. Forward passes only.
    """
    if opts.refine_steps == 0:
        return adv, best
    low = torch.zeros_like(best)[:, None]
    high = torch.ones_like(best)[:, None]
    seg = adv - x0
    for _ in range(opts.refine_steps):
        mid = (low + high) / 2
        hit = _is_adv(model, x0 + mid * seg, shape, y)[:, None]
        high = torch.where(hit, mid, high)
        low = torch.where(hit, low, mid)
    t = high * (1 + (opts.eta - 1) * (1 - opts.beta))
    if cap is not None:  # the margin never costs a point within ε (nor does its rounding)
        room = cap * (1 - 1e-5) / sample_size(seg, opts.norm).clamp_min(TINY)[:, None]
        t = torch.minimum(t, torch.maximum(high, room))
    cand = (x0 + t * seg).clamp(*opts.clip)
    ok = torch.isfinite(best) & _is_adv(model, cand, shape, y)
    adv = torch.where(ok[:, None], cand, adv)
    return adv, torch.where(ok, sample_size(adv - x0, opts.norm), best)


def _targets(logits: Tensor, y: Tensor, targeted: bool, target_classes: int) -> list[Tensor | None]:
    """The planes to head for: None (the nearest) or each top-scoring wrong class in turn."""
    if not targeted:
        return [None]
    k = logits.shape[1]
    ranked = other_logits(logits, y)
    return list(ranked.topk(min(target_classes, k - 1), dim=1).indices.unbind(1))


def _restart_cap(eps: float | None, opts: _Options, n_dim: int) -> float:
    """The largest restart radius: ε, and never more than the box's own size in the norm."""
    lo, hi = opts.clip
    box = (hi - lo) * (1.0 if opts.norm == "linf" else math.sqrt(n_dim))
    return box if eps is None else min(eps, box)


def _best_of_runs(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    targets: list[Tensor | None],
    shape: torch.Size,
    cap: float,
    opts: _Options,
) -> tuple[Tensor, Tensor]:
    """Every target's runs (the first from x0, restarts at random): the smallest adversarial.

    A restart starts at half the best norm so far (at most ``cap``), so it searches inside it.
    """
    gen = torch.Generator(device=x0.device).manual_seed(opts.seed)
    adv = x0.clone()
    best = torch.full((x0.shape[0],), math.inf, device=x0.device, dtype=x0.dtype)
    for target in targets:
        for restart in range(opts.restarts):
            if restart == 0:
                start = x0.clone()
            else:
                start = _restart_point(x0, best.clamp(max=cap) / 2, opts.norm, gen, opts.clip)
            cand, size = _single_run(model, x0, y, target, start, shape, opts)
            better = size < best
            best = torch.where(better, size, best)
            adv = torch.where(better[:, None], cand, adv)
    return adv, best


def _search(
    model: nn.Module, x: Tensor, y: Tensor, eps: float | None, opts: _Options
) -> tuple[Tensor, Tensor]:
    """Minimal adversarial per sample (x where none) and its norm (0: already wrong; inf: none)."""
    check_norm(opts.norm)
    x = x.detach()
    out = x.clone()
    dist = torch.full((x.shape[0],), math.inf, device=x.device, dtype=x.dtype)
    if x.shape[0] == 0 or opts.steps == 0:
        return out, dist
    with attack_mode(model), torch.enable_grad():
        with torch.no_grad():
            logits = model(x)
        correct = logits.argmax(1) == y
        dist = torch.where(correct, dist, torch.zeros_like(dist))
        idx = correct.nonzero().squeeze(1)  # one sync, before the loop: attack only these
        if idx.numel() == 0:
            return out, dist
        x_in, yc = x[idx], y[idx]
        shape = x_in.shape
        x0 = x_in.flatten(1)
        targets = _targets(logits[idx], yc, opts.targeted, opts.target_classes)
        cap = _restart_cap(eps, opts, x0.shape[1])
        # A batch-dependent model judges the attacked points with the others in the batch.
        view = subset_model(model, x, idx, is_batch_dependent(model))
        adv, best = _best_of_runs(view, x0, yc, targets, shape, cap, opts)
        adv, best = _refine(view, x0, adv, best, yc, shape=shape, opts=opts, cap=eps)
    out[idx] = adv.view(shape)
    dist[idx] = best
    return out, dist


def _to_budget_in_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    adv: Tensor,
    found: Tensor,
    *,
    eps: float,
    norm: str,
    clip: tuple[float, float],
) -> Tensor:
    """The batch `fab` returns for a batch-dependent model.

    A minimal adversarial sits at its boundary, under batch statistics that the other
    points' moves keep changing: in a shared batch each is pushed out to ε along its own
    direction (the most margin the budget allows), and the batch returned is judged whole.
    """
    seg = adv - x
    reach = per_sample(eps * (1 - 1e-5) / sample_size(seg, norm).clamp_min(TINY), x)
    out = torch.where(found, (x + reach * seg).clamp(*clip), x)
    with attack_mode(model):
        out, _ = settle(model, x, out, y)
    return out.detach()


def fab(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    targeted: bool = False,
    target_classes: int = 9,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    seed: int = 0,
    clip: tuple[float, float] = (0.0, 1.0),
    refine_steps: int = 10,
) -> Tensor:
    """Per sample, the minimal adversarial FAB finds if its norm is ≤ ε, else ``x`` unchanged.

    So accuracy on the result is robust accuracy at ε. ``targeted`` runs FAB-T: the planes
    of the ``target_classes`` highest-scoring wrong classes in turn (success is still any
    misclassification, as in AutoAttack). Restarts after the first start at random, at
    half the smaller of ε and the best norm so far. ``refine_steps`` bisections then trim
    the overshoot, keeping a margin of (eta − 1)(1 − beta) past the boundary (`_refine`).
    A batch-dependent model is attacked inside the whole batch; there each adversarial found
    is pushed out to ε along its direction, and a point is changed only if the batch
    returned misclassifies it (`settle`).
    """
    check_norm(norm)
    if eps == 0 or steps == 0:
        return x.detach().clone()
    adv, dist = _search(
        model,
        x,
        y,
        eps,
        _Options(
            norm=norm,
            steps=steps,
            restarts=restarts,
            targeted=targeted,
            target_classes=target_classes,
            alpha_max=alpha_max,
            eta=eta,
            beta=beta,
            seed=seed,
            clip=clip,
            refine_steps=refine_steps,
        ),
    )
    x = x.detach()
    found = per_sample(dist <= eps, x)
    if is_batch_dependent(model):
        return _to_budget_in_batch(model, x, y, adv, found, eps=eps, norm=norm, clip=clip)
    return torch.where(found, adv, x).detach()


def fab_distance(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str = "linf",
    eps: float | None = None,
    steps: int = 100,
    restarts: int = 1,
    targeted: bool = False,
    target_classes: int = 9,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    seed: int = 0,
    clip: tuple[float, float] = (0.0, 1.0),
    refine_steps: int = 10,
) -> Tensor:
    """Norm of the minimal adversarial FAB finds per sample: 0 if misclassified, inf if none.

    ``eps`` only bounds the random-restart radius (default: the size of the box).
    """
    _, dist = _search(
        model,
        x,
        y,
        eps,
        _Options(
            norm=norm,
            steps=steps,
            restarts=restarts,
            targeted=targeted,
            target_classes=target_classes,
            alpha_max=alpha_max,
            eta=eta,
            beta=beta,
            seed=seed,
            clip=clip,
            refine_steps=refine_steps,
        ),
    )
    return dist
