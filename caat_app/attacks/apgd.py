"""AutoPGD (Croce & Hein 2020): PGD with momentum and a budget-aware, self-tuning step size.

Faithful to the settings of the AutoAttack reference implementation: 100 steps, step size
starting at 2ε, halved at the checkpoints p_0 = 0, p_1 = 0.22, p_{j+1} = p_j +
max(p_j − p_{j−1} − 0.03, 0.06) when the loss oscillates or stalls, momentum 0.75, and the
targeted version (APGD-T) run once per top non-true class with the targeted DLR loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caat_app.attacks.common import (
    TINY,
    attack_mode,
    check_norm,
    class_logit,
    is_batch_dependent,
    logit_margin,
    per_sample,
    project,
    seeded_start,
    step_direction,
    subset_model,
)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample Difference of Logits Ratio, −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3).

    Shift- and scale-invariant in the logits, so a model cannot hide behind large or
    saturated logits the way it can with cross-entropy. Needs at least three classes.
    """
    z_sorted = logits.sort(dim=1).values
    return -logit_margin(logits, y) / (z_sorted[:, -1] - z_sorted[:, -3] + TINY)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Per-sample targeted DLR, −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2); needs four classes.

    Maximising it pulls the target logit up to the true one, with the same invariance to
    logit scale as the untargeted DLR.
    """
    z_sorted = logits.sort(dim=1).values
    z_y, z_t = class_logit(logits, y), class_logit(logits, target)
    scale = z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + TINY
    return -(z_y - z_t) / scale


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Per sample, not summed: APGD keeps each sample's best loss."""
    return F.cross_entropy(logits, y, reduction="none")


# The untargeted losses, by the name `loss` takes.
_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ce": _cross_entropy, "dlr": dlr_loss}
APGD_LOSSES = tuple(_LOSSES)


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


def _step(
    x: Tensor, x_cur: Tensor, move: Tensor, eps: float, norm: str, lo: float, hi: float
) -> Tensor:
    """Move from ``x_cur`` and project back into the ε-ball around ``x`` and the box."""
    return (x + project(x_cur + move - x, eps, norm)).clamp(lo, hi)


def _objective(
    model: nn.Module, x_adv: Tensor, *, y: Tensor, target: Tensor | None, loss: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample loss at ``x_adv``, its input gradient, and which points are misclassified."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    if target is not None:
        per_sample_loss = dlr_targeted_loss(logits, y, target)
    else:
        per_sample_loss = _LOSSES[loss](logits, y)
    (grad,) = torch.autograd.grad(per_sample_loss.sum(), x_adv)
    return per_sample_loss.detach(), grad.detach(), logits.detach().argmax(1) != y


@dataclass
class _Track:
    """One run's per-sample bookkeeping, all on the device (``torch.where``, no host syncs)."""

    x_adv: Tensor  # the last misclassified point seen
    fooled: Tensor
    x_best: Tensor  # the highest-loss point, its gradient and loss
    grad_best: Tensor
    loss_best: Tensor
    loss_prev: Tensor
    step: Tensor  # each sample's step size
    increases: Tensor  # loss rises since the last checkpoint
    loss_best_last_check: Tensor
    reduced_last_check: Tensor
    last_checkpoint: int = 0

    @classmethod
    def start(cls, x_cur: Tensor, loss: Tensor, grad: Tensor, fooled: Tensor, eps: float) -> _Track:
        """The start point is the best so far; the step starts at 2ε."""
        n = x_cur.shape[0]
        loss_best = loss.clone()
        return cls(
            x_adv=x_cur.clone(),
            fooled=fooled,
            x_best=x_cur.clone(),
            grad_best=grad.clone(),
            loss_best=loss_best,
            loss_prev=loss,
            step=torch.full((n,), 2.0 * eps, device=x_cur.device, dtype=x_cur.dtype),
            increases=torch.zeros_like(loss_best),
            loss_best_last_check=loss_best.clone(),
            reduced_last_check=torch.ones_like(fooled),  # the first checkpoint: oscillation only
        )

    def record(self, x_cur: Tensor, loss: Tensor, grad: Tensor, fooled_now: Tensor) -> None:
        """Keep the latest misclassified point (as the reference) and the highest-loss one."""
        self.x_adv = torch.where(per_sample(fooled_now, x_cur), x_cur, self.x_adv)
        self.fooled = self.fooled | fooled_now
        self.increases = self.increases + (loss > self.loss_prev).to(self.increases.dtype)
        self.loss_prev = loss
        better = loss > self.loss_best
        self.x_best = torch.where(per_sample(better, x_cur), x_cur, self.x_best)
        self.grad_best = torch.where(per_sample(better, x_cur), grad, self.grad_best)
        self.loss_best = torch.where(better, loss, self.loss_best)

    def review(self, x_cur: Tensor, grad: Tensor, at: int, rho: float) -> tuple[Tensor, Tensor]:
        """At a checkpoint, halve the step where the loss rose too rarely or nothing changed
        since the last one, and go on from the best point there; returns where to go on from.
        """
        oscillating = self.increases < rho * (at - self.last_checkpoint)
        stalled = ~self.reduced_last_check & (self.loss_best_last_check >= self.loss_best)
        reduce = oscillating | stalled
        self.step = torch.where(reduce, 0.5 * self.step, self.step)
        back = per_sample(reduce, x_cur)
        x_cur = torch.where(back, self.x_best, x_cur)
        grad = torch.where(back, self.grad_best, grad)
        self.reduced_last_check = reduce
        self.loss_best_last_check = self.loss_best.clone()
        self.increases = torch.zeros_like(self.increases)
        self.last_checkpoint = at
        return x_cur, grad


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
    """One APGD run on a batch: (last misclassified point, fooled?, best-loss point, best loss)."""
    lo, hi = clip
    objective = partial(_objective, model, y=y, target=target, loss=loss)
    x_cur = (x + eps * seeded_start(x, norm, gen)).clamp(lo, hi)
    loss_cur, grad, fooled = objective(x_cur)
    track = _Track.start(x_cur, loss_cur, grad, fooled, eps)
    x_prev = x_cur
    checkpoints = apgd_checkpoints(steps)
    for i in range(steps):
        z = _step(
            x, x_cur, per_sample(track.step, x) * step_direction(grad, norm), eps, norm, lo, hi
        )
        a = 1.0 if i == 0 else momentum  # the first step has no momentum
        x_new = _step(x, x_cur, a * (z - x_cur) + (1.0 - a) * (x_cur - x_prev), eps, norm, lo, hi)
        x_prev, x_cur = x_cur, x_new
        loss_cur, grad, fooled_now = objective(x_cur)
        track.record(x_cur, loss_cur, grad, fooled_now)
        if i + 1 in checkpoints:
            x_cur, grad = track.review(x_cur, grad, i + 1, rho)
    return track.x_adv, track.fooled, track.x_best, track.loss_best


def _check_args(norm: str, loss: str, steps: int, restarts: int, target_classes: int) -> None:
    """Fail before any work, naming the bad option."""
    check_norm(norm)
    if loss not in APGD_LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; choose one of {', '.join(APGD_LOSSES)}")
    if restarts < 1 or steps < 0 or target_classes < 1:
        raise ValueError("need restarts >= 1, steps >= 0 and target_classes >= 1")


def _targets(
    clean_logits: Tensor, loss: str, targeted: bool, target_classes: int
) -> list[Tensor | None]:
    """The runs' targets: None for the untargeted run, else the top non-true classes in turn."""
    num_classes = clean_logits.shape[1]
    needed = 4 if targeted else 3 if loss == "dlr" else 2
    if num_classes < needed:
        raise ValueError(f"this APGD variant needs >= {needed} classes, got {num_classes}")
    if not targeted:
        return [None]
    ranked = clean_logits.argsort(dim=1, descending=True)
    n_targets = min(target_classes, num_classes - 1)
    # Attacked points are correctly classified, so rank 0 is y and ranks 1.. are targets.
    return [ranked[:, k] for k in range(1, n_targets + 1)]


def _runs(
    model: nn.Module,
    run: Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]],
    x: Tensor,
    y: Tensor,
    done: Tensor,
    targets: list[Tensor | None],
    restarts: int,
) -> Tensor:
    """Every target's restarts, each on the points not yet fooled; per sample the first
    misclassified point found, else the highest-loss one, else ``x``.

    A batch-dependent model (`is_batch_dependent`) meets the whole batch at every step: the
    points not attacked stay in it as they are (broken ones at their adversarial), and after
    each run the batch is judged whole, so the next run attacks what that batch leaves robust.
    """
    shared = is_batch_dependent(model)
    stay = done.clone()  # misclassified at the start: never attacked
    out = x.clone()
    best_loss = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
    for target in targets:
        for _ in range(restarts):
            idx = (~done).nonzero().squeeze(1)  # one host sync per run, not per step
            if idx.numel() == 0:
                return out
            adv, fooled, x_best, loss_best = run(
                subset_model(model, out, idx, shared),
                x[idx],
                y[idx],
                None if target is None else target[idx],
            )
            better = loss_best > best_loss[idx]
            keep = torch.where(per_sample(better, x_best), x_best, out[idx])
            out[idx] = torch.where(per_sample(fooled, adv), adv, keep)
            best_loss[idx] = torch.where(better, loss_best, best_loss[idx])
            if shared:
                with torch.no_grad():
                    done = stay | (model(out).argmax(1) != y)
            else:
                done[idx] = fooled
    return out


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
    the last misclassified iterate of the run that fooled it, else the highest-loss
    point; points misclassified at the start come back unchanged. A model whose
    predictions depend on the batch is attacked inside the whole batch (`_runs`). The
    L∞ start lies on the surface of the ε-box, the L2 start on the ε-sphere, as
    AutoAttack's. ``seed`` drives a private generator on ``x``'s device, so results are
    reproducible and the global RNG is left alone.
    """
    _check_args(norm, loss, steps, restarts, target_classes)
    x = x.detach()
    if eps == 0 or steps == 0 or x.shape[0] == 0:
        return x.clone()
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    run = partial(
        _single_run,
        eps=eps,
        norm=norm,
        loss=loss,
        steps=steps,
        rho=rho,
        momentum=momentum,
        gen=gen,
        clip=clip,
    )
    with attack_mode(model), torch.enable_grad():
        with torch.no_grad():
            clean_logits = model(x)
        targets = _targets(clean_logits, loss, targeted, target_classes)
        done = clean_logits.argmax(1) != y  # misclassified: nothing to do
        return _runs(model, run, x, y, done, targets, restarts)
