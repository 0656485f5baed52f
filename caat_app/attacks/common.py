"""What the attacks share, defined once: the no-parameter-gradient context, per-sample shapes
and norms, projections, random starts, and the losses on logits several attacks use.

The attack files (one per family) hold only what is their own; a helper two of them need
lives here, so a fix to it reaches every attack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caat_app.attacks.registry import NORMS

LossFn = Callable[[Tensor, Tensor], Tensor]

TINY = 1e-12
"""Floor under a divisor (a norm, a logit gap), so an all-zero sample gives 0, never NaN."""


def check_norm(norm: str) -> None:
    """Fail early with the choices, so a typo never silently picks a norm."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with frozen parameters, so the attack builds no parameter gradient.

    Every module's training flag and every parameter's requires_grad flag are put back
    afterwards, even on an exception; parameters' ``.grad`` tensors are never touched.
    """
    modes = [(m, m.training) for m in model.modules()]
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in frozen:
            p.requires_grad_(True)
        for m, training in modes:
            m.training = training


# ------------------------------------------------------------------------- per-sample shapes


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """A per-sample vector (N,) shaped (N, 1, …, 1) to broadcast against the batch ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def sample_size(t: Tensor, norm: str) -> Tensor:
    """Each sample's size in the norm (L∞: largest entry, L2: Euclidean), shape (N,)."""
    flat = t.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


def normalize_l2(g: Tensor) -> Tensor:
    """Unit L2 direction per sample; an all-zero sample stays zero instead of NaN."""
    return g / per_sample(sample_size(g, "l2"), g).clamp_min(TINY)


def step_direction(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit size for the norm (sign for L∞, unit L2)."""
    return grad.sign() if norm == "linf" else normalize_l2(grad)


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Pull a perturbation back into the ε-ball (L∞: clamp; L2: per-sample rescale)."""
    check_norm(norm)
    if norm == "linf":
        return delta.clamp(-eps, eps)
    factor = (eps / per_sample(sample_size(delta, "l2"), delta).clamp_min(TINY)).clamp(max=1.0)
    return delta * factor


# ---------------------------------------------------------------------------- random starts


def random_init(x: Tensor, eps: float, norm: str) -> Tensor:
    """PGD's start (Madry et al.): a perturbation drawn uniformly from the ε-ball.

    Drawn from the global generator on purpose: a training run seeds it once, and its
    attacks repeat with it. The L2 draw fills the ball (radius ε·u^(1/d)). The AutoAttack
    family starts differently (`seeded_start`); the two are not interchangeable.
    """
    check_norm(norm)
    if norm == "linf":
        return torch.empty_like(x).uniform_(-eps, eps)
    d = x[0].numel() if x.shape[0] > 0 else 1
    direction = normalize_l2(torch.randn_like(x))
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    radius = eps * torch.rand(shape, device=x.device, dtype=x.dtype).pow(1.0 / d)
    return direction * radius


def seeded_start(like: Tensor, norm: str, gen: torch.Generator) -> Tensor:
    """A unit-size random start from an attack's own generator: uniform in [−1, 1] (L∞), or
    a direction on the unit L2 sphere.

    For the attacks that take a ``seed`` (APGD, FAB): a private generator makes an
    evaluation repeat without touching the global RNG. APGD scales it by ε (the L2 start
    on the sphere, as AutoAttack's); FAB scales it to its own per-sample radius and puts
    the L∞ draw on the box's surface first (`fab`).
    """
    if norm == "linf":
        u = torch.rand(like.shape, generator=gen, device=like.device, dtype=like.dtype)
        return 2.0 * u - 1.0
    g = torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)
    return normalize_l2(g)


# ------------------------------------------------------------------------- losses on logits


def summed_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Summed, not averaged, so the input gradient does not shrink with batch size."""
    return F.cross_entropy(logits, y, reduction="sum")


def class_logit(logits: Tensor, c: Tensor) -> Tensor:
    """Per sample, the logit of its class ``c`` (true label or target), shape (N,)."""
    return logits.gather(1, c[:, None]).squeeze(1)


def other_logits(logits: Tensor, y: Tensor) -> Tensor:
    """The logits with each sample's class ``y`` struck out (−inf): what competes with it."""
    return logits.scatter(1, y[:, None], -math.inf)


def runner_up(logits: Tensor, y: Tensor) -> Tensor:
    """Per sample, the highest-scoring class other than ``y``: the strongest single target."""
    return other_logits(logits, y).argmax(1)


def best_other_logit(logits: Tensor, y: Tensor) -> Tensor:
    """max_{i≠y} z_i per sample, read off the sorted logits.

    Read off a sort, as AutoAttack's DLR loss does, rather than a max over `other_logits`:
    the value is the same, but under tied logits the gradient then flows to one class
    instead of being shared, so APGD-DLR keeps the reference's steps exactly.
    """
    z_sorted, idx_sorted = logits.sort(dim=1)
    return torch.where(idx_sorted[:, -1] == y, z_sorted[:, -2], z_sorted[:, -1])


def logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """z_y − max_{i≠y} z_i per sample: > 0 while the class ``y`` wins, ≤ 0 once it does not."""
    return class_logit(logits, y) - best_other_logit(logits, y)
