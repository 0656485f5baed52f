"""The CA-AT gradient arithmetic, on flat 1-D gradient vectors.

g_c is the gradient of the clean loss, g_a that of the adversarial loss.
φ = cos(g_c, g_a) and the conflict μ = ‖g_c‖·‖g_a‖·(1 − φ). Vanilla AT steps along
(1 − λ)·g_c + λ·g_a; CA-AT steps along g_c when φ ≥ γ and otherwise along

    g* = g_a + ‖g_a‖(γ√(1−φ²) − φ√(1−γ²)) / (‖g_c‖√(1−γ²)) · g_c        (Eq. 4)

which is g_a rotated onto the cone cos(g*, g_c) = γ, with ‖g*‖ = ‖g_a‖√(1−φ²)/√(1−γ²).

Every direction is written as coef_c·g_c + coef_a·g_a with the coefficients kept on
the device, so the trainer never synchronises with the host to take the φ ≤ γ branch.

The boundary φ = γ steps along g_c, as the official code (`grad_proj.py`: project only
when cos < γ) and Algorithm 1 do; Eq. 4 there would give g_a itself.

Degenerate cases (each one is tested):
- γ = 1: Eq. 4 divides by √(1−γ²) = 0. As γ → 1 the cone closes on g_c and g* turns
  towards g_c while its length ‖g_a‖√(1−φ²)/√(1−γ²) grows without bound; caat steps
  along g_c itself, so "CA-AT γ = 1" trains exactly as clean training does. The official
  code evaluates Eq. 4 at γ = 1: huge or NaN steps (its `nan_to_num` turns NaN into 0
  and ±inf into ±float max).
- ‖g_c‖ = 0: there is nothing to protect, the step is g_a.
- ‖g_a‖ = 0: the step is g_c. A zero gradient conflicts with nothing: φ = 1, μ = 0.
- φ = 1 exactly: no conflict, the step is g_c (for γ < 1).
- φ = −1 exactly (and γ < 1): the rotation of g_a onto the cone is not unique and Eq. 4
  gives its length ‖g_a‖√(1−φ²) = 0, so the gradient step is the zero vector.
- Non-finite gradients (or products that overflow float32): `ok` is False. The
  optimiser then skips the whole update; the trainer counts such steps.

Projection `global` (the paper) treats all trainable parameters as one vector;
`layer` applies the same rule to each parameter tensor on its own (`segments`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from caat_app.method.registry import METHODS, PROJECTIONS


class Conflict(NamedTuple):
    """φ, μ and the two norms, as device tensors (scalars, or one per segment)."""

    phi: Tensor
    mu: Tensor
    norm_c: Tensor
    norm_a: Tensor


class Mix(NamedTuple):
    """One step's mixing: the conflict, the coefficients and whether to apply it."""

    conflict: Conflict
    coef_c: Tensor
    coef_a: Tensor
    fired: Tensor
    ok: Tensor


def segment_ids(sizes: list[int] | tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """Index of the segment (parameter tensor) each flat element belongs to."""
    counts = torch.tensor(list(sizes), dtype=torch.long, device=device)
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), counts)


def _gram(g_c: Tensor, g_a: Tensor, segments: Tensor | None, n_segments: int) -> tuple[Tensor, ...]:
    """g_c·g_a, ‖g_c‖² and ‖g_a‖², globally or per segment."""
    if segments is None:
        return torch.dot(g_c, g_a), torch.dot(g_c, g_c), torch.dot(g_a, g_a)
    out = torch.zeros(3, n_segments, dtype=g_c.dtype, device=g_c.device)
    out[0].index_add_(0, segments, g_c * g_a)
    out[1].index_add_(0, segments, g_c * g_c)
    out[2].index_add_(0, segments, g_a * g_a)
    return out[0], out[1], out[2]


def _conflict_from_gram(dot: Tensor, sq_c: Tensor, sq_a: Tensor) -> Conflict:
    norm_c, norm_a = sq_c.sqrt(), sq_a.sqrt()
    denom = norm_c * norm_a
    both = denom > 0
    phi = torch.where(both, dot / torch.where(both, denom, 1.0), 1.0).clamp(-1.0, 1.0)
    mu = denom * (1.0 - phi)
    return Conflict(phi, mu, norm_c, norm_a)


def conflict_stats(
    g_c: Tensor, g_a: Tensor, *, segments: Tensor | None = None, n_segments: int | None = None
) -> Conflict:
    """φ, μ, ‖g_c‖, ‖g_a‖ of two flat gradients (per segment when `segments` is given).

    `n_segments` defaults to the largest segment id + 1 (a host sync: give it in loops).
    """
    if segments is not None and n_segments is None:
        n_segments = int(segments.max()) + 1 if segments.numel() else 0
    return _conflict_from_gram(*_gram(g_c, g_a, segments, n_segments or 0))


def segment_conflict(grads: Tensor, sizes: list[int] | tuple[int, ...]) -> Conflict:
    """φ, μ and the norms of each segment (parameter tensor) of a (2, P) gradient buffer.

    One 2×2 Gram matrix per segment, on views: unlike `segments=` it needs no P-long
    index vector nor product temporaries, so per-layer statistics cost a large model no
    memory. Equal to `conflict_stats(g_c, g_a, segments=segment_ids(sizes))`.
    """
    parts = grads.split(list(sizes), dim=1)
    gram = torch.stack([part @ part.T for part in parts])
    return _conflict_from_gram(gram[:, 0, 1], gram[:, 0, 0], gram[:, 1, 1])


def ca_at_coefficients(c: Conflict, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    """(coef_c, coef_a, fired) of Eq. 4, decided on the device with `torch.where`.

    Fires when φ < γ strictly: φ = γ keeps g_c (the official rule).
    """
    phi, norm_c, norm_a = c.phi, c.norm_c, c.norm_a
    one, zero = torch.ones_like(phi), torch.zeros_like(phi)
    has_c = norm_c > 0
    if gamma >= 1.0:
        fired = torch.zeros_like(phi, dtype=torch.bool)
    else:
        fired = has_c & (norm_a > 0) & (phi < gamma)
    if gamma >= 1.0:
        k = zero
    else:
        s = math.sqrt(1.0 - gamma * gamma)
        sin_phi = (1.0 - phi * phi).clamp_min(0.0).sqrt()
        safe_c = torch.where(has_c, norm_c, 1.0)
        k = norm_a * (gamma * sin_phi - phi * s) / (safe_c * s)
    coef_c = torch.where(fired, k, torch.where(has_c, one, zero))
    coef_a = torch.where(fired | ~has_c, one, zero)
    return coef_c, coef_a, fired


def vanilla_coefficients(c: Conflict, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """(1 − λ, λ, never fired), shaped like φ."""
    return (
        torch.full_like(c.phi, 1.0 - lam),
        torch.full_like(c.phi, lam),
        torch.zeros_like(c.phi, dtype=torch.bool),
    )


def combine(
    g_c: Tensor,
    g_a: Tensor,
    coef_c: Tensor,
    coef_a: Tensor,
    *,
    segments: Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """coef_c·g_c + coef_a·g_a, with per-segment coefficients spread over their elements."""
    if segments is not None:
        coef_c, coef_a = coef_c[segments], coef_a[segments]
    out = torch.mul(g_a, coef_a, out=out) if out is not None else g_a * coef_a
    return out.addcmul_(g_c, coef_c)


def ca_at_direction(
    g_c: Tensor, g_a: Tensor, gamma: float, *, segments: Tensor | None = None
) -> Tensor:
    """The CA-AT step direction (Eq. 4; g_c when φ ≥ γ)."""
    coef_c, coef_a, _ = ca_at_coefficients(conflict_stats(g_c, g_a, segments=segments), gamma)
    return combine(g_c, g_a, coef_c, coef_a, segments=segments)


def vanilla_direction(g_c: Tensor, g_a: Tensor, lam: float) -> Tensor:
    """The Vanilla-AT step direction (1 − λ)·g_c + λ·g_a."""
    return torch.lerp(g_c, g_a, lam)


class Mixer:
    """Turns the two gradient rows of a (2, P) buffer into one step direction.

    Built once per run; every call works on the device without a host sync.
    Vanilla runs measure φ and μ too, so both methods do the same arithmetic.
    """

    def __init__(
        self,
        method: str,
        value: float,
        *,
        sizes: list[int] | None = None,
        projection: str = "global",
        device: torch.device | str = "cpu",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if projection not in PROJECTIONS:
            raise ValueError(
                f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}"
            )
        self.method, self.value = method, float(value)
        self.segments: Tensor | None = None
        self.n_segments = 1
        if projection == "layer":
            if not sizes:
                raise ValueError("layer projection needs the parameter sizes")
            self.segments = segment_ids(sizes, device)
            self.n_segments = len(sizes)

    def __call__(self, grads: Tensor, out: Tensor) -> Mix:
        """Write the direction into `out`; return the step's statistics (global φ, μ)."""
        g_c, g_a = grads[0], grads[1]
        if self.segments is None:
            gram = grads @ grads.T
            dot, sq_c, sq_a = gram[0, 1], gram[0, 0], gram[1, 1]
            per = whole = _conflict_from_gram(dot, sq_c, sq_a)
            finite = torch.isfinite(gram).all()
        else:
            dot, sq_c, sq_a = _gram(g_c, g_a, self.segments, self.n_segments)
            per = _conflict_from_gram(dot, sq_c, sq_a)
            whole = _conflict_from_gram(dot.sum(), sq_c.sum(), sq_a.sum())
            finite = torch.isfinite(torch.stack((dot.sum(), sq_c.sum(), sq_a.sum()))).all()
        if self.method == "caat":
            coef_c, coef_a, fired = ca_at_coefficients(per, self.value)
        else:
            coef_c, coef_a, fired = vanilla_coefficients(per, self.value)
        if self.segments is None:
            torch.mm(torch.stack((coef_c, coef_a)).view(1, 2), grads, out=out.view(1, -1))
        else:
            combine(g_c, g_a, coef_c, coef_a, segments=self.segments, out=out)
        ok = finite & torch.isfinite(coef_c).all()
        return Mix(whole, coef_c.mean(), coef_a.mean(), fired.float().mean(), ok)
