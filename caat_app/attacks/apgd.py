"""AutoPGD (Croce & Hein 2020): PGD with momentum and a budget-aware, self-tuning step size.

Faithful to the settings of the AutoAttack reference implementation: 100 steps, step size
starting at 2ε, halved at the checkpoints p_0 = 0, p_1 = 0.22, p_{j+1} = p_j +
max(p_j − p_{j−1} − 0.03, 0.06) when the loss oscillates or stalls, momentum 0.75, and the
targeted version (APGD-T) run once per top non-true class with the targeted DLR loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caat_app.attacks.common import attack_mode, check_norm, normalize_l2, project

APGD_LOSSES = ("ce", "dlr")

_TINY = 1e-12


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample Difference of Logits Ratio, −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3).

    Shift- and scale-invariant in the logits, so a model cannot hide behind large or
    saturated logits the way it can with cross-entropy. Needs at least three classes.
    """
    z_sorted, idx_sorted = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = torch.where(idx_sorted[:, -1] == y, z_sorted[:, -2], z_sorted[:, -1])
    return -(z_y - z_other) / (z_sorted[:, -1] - z_sorted[:, -3] + _TINY)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Per-sample targeted DLR, −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2); needs four classes.

    Maximising it pulls the target logit up to the true one, with the same invariance to
    logit scale as the untargeted DLR.
    """
    z_sorted = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    scale = z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + _TINY
    return -(z_y - z_t) / scale


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations after which the step size is reviewed: ⌈p_j·steps⌉ for the paper's p_j.

    For 100 steps: 22, 41, 57, 70, 80, 87, 93, 99, as in the reference implementation.
    """
    p_prev, p = 0.0, 0.22
    points: list[int] = []
    while p <= 1.0:
        w = math.ceil(round(p * steps, 9))  # round first: 0.41·100 must not ceil to 42
        if 0 < w <= steps and (not points or w > points[-1]):
            points.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return points


def _per_sample(mask: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector so it broadcasts against an image batch."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _random_start(x: Tensor, eps: float, norm: str, gen: torch.Generator) -> Tensor:
    """Seeded start: uniform in the L∞ box, or a random direction of length ε for L2."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return eps * (2.0 * u - 1.0)
    g = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return eps * normalize_l2(g)


def _step(
    x: Tensor, x_cur: Tensor, move: Tensor, eps: float, norm: str, lo: float, hi: float
) -> Tensor:
    """Move from ``x_cur`` and project back into the ε-ball around ``x`` and the box."""
    return (x + project(x_cur + move - x, eps, norm)).clamp(lo, hi)


def _single_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    *,
    eps: float,
    norm: str,
    loss: str,
    steps: int,
    rho: float,
    momentum: float,
    gen: torch.Generator,
    clip: tuple[float, float],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One APGD run on a batch: (last misclassified point, fooled?, best-loss point, best loss).

    All per-sample bookkeeping stays on the device (``torch.where``), no host syncs.
    """
    lo, hi = clip

    def objective(x_adv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        if target is not None:
            per_sample = dlr_targeted_loss(logits, y, target)
        elif loss == "dlr":
            per_sample = dlr_loss(logits, y)
        else:
            per_sample = F.cross_entropy(logits, y, reduction="none")
        (grad,) = torch.autograd.grad(per_sample.sum(), x_adv)
        return per_sample.detach(), grad.detach(), logits.detach().argmax(1) != y

    x_cur = (x + _random_start(x, eps, norm, gen)).clamp(lo, hi)
    loss_cur, grad, fooled = objective(x_cur)
    x_adv, x_best, grad_best = x_cur.clone(), x_cur.clone(), grad.clone()
    loss_best, loss_prev = loss_cur.clone(), loss_cur
    x_prev = x_cur
    step = torch.full((x.shape[0],), 2.0 * eps, device=x.device, dtype=x.dtype)
    increases = torch.zeros_like(loss_best)
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones_like(fooled)  # the first checkpoint only checks oscillation
    checkpoints = apgd_checkpoints(steps)
    last_checkpoint = 0

    for i in range(steps):
        direction = grad.sign() if norm == "linf" else normalize_l2(grad)
        z = _step(x, x_cur, _per_sample(step, x) * direction, eps, norm, lo, hi)
        a = 1.0 if i == 0 else momentum  # the first step has no momentum
        x_new = _step(x, x_cur, a * (z - x_cur) + (1.0 - a) * (x_cur - x_prev), eps, norm, lo, hi)
        x_prev, x_cur = x_cur, x_new

        loss_cur, grad, fooled_now = objective(x_cur)
        x_adv = torch.where(_per_sample(fooled_now, x), x_cur, x_adv)
        fooled = fooled | fooled_now
        increases = increases + (loss_cur > loss_prev).to(increases.dtype)
        loss_prev = loss_cur
        better = loss_cur > loss_best
        x_best = torch.where(_per_sample(better, x), x_cur, x_best)
        grad_best = torch.where(_per_sample(better, x), grad, grad_best)
        loss_best = torch.where(better, loss_cur, loss_best)

        if i + 1 in checkpoints:
            # Halve where the loss rose too rarely, or where nothing changed since last time.
            oscillating = increases < rho * (i + 1 - last_checkpoint)
            stalled = ~reduced_last_check & (loss_best_last_check >= loss_best)
            reduce = oscillating | stalled
            step = torch.where(reduce, 0.5 * step, step)
            x_cur = torch.where(_per_sample(reduce, x), x_best, x_cur)
            grad = torch.where(_per_sample(reduce, x), grad_best, grad)
            reduced_last_check = reduce
            loss_best_last_check = loss_best.clone()
            increases = torch.zeros_like(increases)
            last_checkpoint = i + 1

    return x_adv, fooled, x_best, loss_best


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    loss: str = "ce",
    steps: int = 100,
    restarts: int = 1,
    targeted: bool = False,
    target_classes: int = 9,
    rho: float = 0.75,
    momentum: float = 0.75,
    seed: int = 0,
    clip: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Return detached AutoPGD adversarials inside the ε-ball around ``x`` and inside ``clip``.

    ``loss`` is "ce" or "dlr" for the untargeted attack (APGD-CE, APGD-DLR). ``targeted``
    is APGD-T: it always uses the targeted DLR loss (``loss`` is then ignored) and runs once
    per target among the ``target_classes`` highest-ranked non-true clean logits. Each run
    and restart attacks only the points not yet misclassified. Per sample the result is
    the first misclassified point found, else the highest-loss point; points misclassified
    at the start come back unchanged. ``seed`` drives a private generator on ``x``'s device,
    so results are reproducible and the global RNG is left alone.
    """
    check_norm(norm)
    if loss not in APGD_LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; choose one of {', '.join(APGD_LOSSES)}")
    if restarts < 1 or steps < 0 or target_classes < 1:
        raise ValueError("need restarts >= 1, steps >= 0 and target_classes >= 1")
    x = x.detach()
    if eps == 0 or steps == 0 or x.shape[0] == 0:
        return x.clone()
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    out = x.clone()
    with attack_mode(model), torch.enable_grad():
        with torch.no_grad():
            clean_logits = model(x)
        num_classes = clean_logits.shape[1]
        needed = 4 if targeted else 3 if loss == "dlr" else 2
        if num_classes < needed:
            raise ValueError(f"this APGD variant needs >= {needed} classes, got {num_classes}")
        done = clean_logits.argmax(1) != y  # misclassified: nothing to do
        best_loss = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
        if targeted:
            ranked = clean_logits.argsort(dim=1, descending=True)
            n_targets = min(target_classes, num_classes - 1)
            # Attacked points are correctly classified, so rank 0 is y and ranks 1.. are targets.
            targets: list[Tensor | None] = [ranked[:, k] for k in range(1, n_targets + 1)]
        else:
            targets = [None]
        for target in targets:
            for _ in range(restarts):
                idx = (~done).nonzero().squeeze(1)  # one host sync per run, not per step
                if idx.numel() == 0:
                    return out
                adv, fooled, x_best, loss_best = _single_run(
                    model,
                    x[idx],
                    y[idx],
                    None if target is None else target[idx],
                    eps=eps,
                    norm=norm,
                    loss=loss,
                    steps=steps,
                    rho=rho,
                    momentum=momentum,
                    gen=gen,
                    clip=clip,
                )
                better = loss_best > best_loss[idx]
                keep = torch.where(_per_sample(better, x_best), x_best, out[idx])
                out[idx] = torch.where(_per_sample(fooled, adv), adv, keep)
                best_loss[idx] = torch.where(better, loss_best, best_loss[idx])
                done[idx] = fooled
    return out
