"""Shared pieces of the attacks: the no-parameter-gradient context, projections, random starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caat_app.attacks.registry import NORMS

LossFn = Callable[[Tensor, Tensor], Tensor]

_TINY = 1e-12


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


def _per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t``."""
    norms = t.flatten(1).norm(p=2, dim=1)
    return norms.view(-1, *([1] * (t.dim() - 1)))


def normalize_l2(g: Tensor) -> Tensor:
    """Unit L2 direction per sample; an all-zero sample stays zero instead of NaN."""
    return g / _per_sample_norm(g).clamp_min(_TINY)


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Pull a perturbation back into the ε-ball (L∞: clamp; L2: per-sample rescale)."""
    check_norm(norm)
    if norm == "linf":
        return delta.clamp(-eps, eps)
    factor = (eps / _per_sample_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
    return delta * factor


def random_init(x: Tensor, eps: float, norm: str) -> Tensor:
    """A perturbation drawn uniformly from the ε-ball (L∞ box or L2 ball)."""
    check_norm(norm)
    if norm == "linf":
        return torch.empty_like(x).uniform_(-eps, eps)
    d = x[0].numel() if x.shape[0] > 0 else 1
    direction = normalize_l2(torch.randn_like(x))
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    radius = eps * torch.rand(shape, device=x.device, dtype=x.dtype).pow(1.0 / d)
    return direction * radius


def summed_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Summed, not averaged, so the input gradient does not shrink with batch size."""
    return F.cross_entropy(logits, y, reduction="sum")


def step_direction(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit size for the norm (sign for L∞, unit L2)."""
    return grad.sign() if norm == "linf" else normalize_l2(grad)
