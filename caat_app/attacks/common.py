"""What the attacks share, defined once: the no-parameter-gradient context, per-sample shapes
and norms, projections, random starts, and the losses on logits several attacks use.

The attack files (one per family) hold only what is their own; a helper two of them need
lives here, so a fix to it reaches every attack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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
    """A unit-size random start from an attack's own generator: a point on the surface of
    the unit L∞ box, or a direction on the unit L2 sphere.

    For the attacks that take a ``seed`` (APGD, FAB), as AutoAttack starts them: the L∞
    draw is uniform in [−1, 1] and then divided by its largest entry, so every start sits
    at the full radius. A private generator makes an evaluation repeat without touching
    the global RNG. APGD scales it by ε, FAB by its own per-sample radius.
    """
    if norm == "linf":
        u = torch.rand(like.shape, generator=gen, device=like.device, dtype=like.dtype)
        t = 2.0 * u - 1.0
        return t / per_sample(sample_size(t, "linf"), t).clamp_min(TINY)
    g = torch.randn(like.shape, generator=gen, device=like.device, dtype=like.dtype)
    return normalize_l2(g)


# ------------------------------------------------------------------ batch-statistics models


def _on_batch_statistics(module: nn.Module) -> bool:
    """A BatchNorm without running statistics: it normalises with the batch's own, even in
    eval mode (`--bn batchstats`)."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return isinstance(module, norms) and module.running_mean is None


def is_batch_dependent(model: nn.Module) -> bool:
    """Whether a prediction depends on the rest of the batch (a BatchNorm on batch statistics).

    Such a model is attacked and judged on whole fixed batches: a point dropped from the
    batch (because it is already broken) would change every other point's prediction.
    """
    return any(_on_batch_statistics(m) for m in model.modules())


def _statistics_as_constants(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
    """The BatchNorm's own output, with the gradient of a BatchNorm whose statistics (this
    batch's) are constants: the value is exactly ``out``, so no prediction moves."""
    h = inputs[0]
    dims = [0, *range(2, h.dim())]
    mean, var = h.detach().mean(dims), h.detach().var(dims, unbiased=False)
    bn: Any = module
    frozen = F.batch_norm(h, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return out.detach() + (frozen - frozen.detach())


@contextmanager
def own_gradients(model: nn.Module) -> Iterator[None]:
    """Each point's input gradient through its own logits only, on a batch-dependent model.

    The batch statistics link every point's logits to every input; summed over the batch,
    as attacks sum their losses, those cross terms cancel much of a BatchNorm's gradient
    (its outputs always sum to the same) and FAB's per-class Jacobian drowns in them. So
    the backward treats the statistics as constants, while the forward values stay the
    model's own to the last bit. A per-sample model gets no hook at all.
    """
    hooks = [
        m.register_forward_hook(_statistics_as_constants)
        for m in model.modules()
        if _on_batch_statistics(m)
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


class InBatch(nn.Module):
    """The model as the rows ``idx`` of the batch ``full`` see it: their logits with the
    other rows in place, so an attack on a subset meets the statistics it is judged under.

    Gradients reach the subset only. ``full`` is read at every call, so an attack that
    updates it in place moves the context along with it.
    """

    def __init__(self, model: nn.Module, full: Tensor, idx: Tensor) -> None:
        super().__init__()
        self.model = model
        self.full = full
        self.idx = idx

    def forward(self, sub: Tensor) -> Tensor:
        return self.model(self.full.index_put((self.idx,), sub))[self.idx]  # type: ignore[no-any-return]


def subset_model(model: nn.Module, full: Tensor, idx: Tensor, batch_dependent: bool) -> nn.Module:
    """The model an attack on the rows ``idx`` of ``full`` should call: the model itself when
    its predictions are per sample (cheap: only the subset is computed), else `InBatch`."""
    return InBatch(model, full, idx) if batch_dependent else model


def settle(model: nn.Module, x: Tensor, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Put every changed point the whole batch ``out`` does not misclassify back to its clean
    value; return the batch and which of its points are misclassified.

    For batch-dependent models, whose points sway each other: putting one back can save
    another, so this repeats until every changed point is misclassified in the very batch
    returned (each round puts at least one back, so it ends; one round is the rule).
    """
    moved = (out != x).flatten(1).any(1)
    while True:
        with torch.no_grad():
            wrong = model(out).argmax(1) != y
        undo = moved & ~wrong
        if not bool(undo.any()):
            return out, wrong
        out = torch.where(per_sample(undo, out), x, out)
        moved = moved & ~undo


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
