"""Square Attack (Andriushchenko et al. 2020): score-based black-box random search, L∞ or L2.

It reads only the model's logits, never a gradient, so it is the check that a model's
robustness is not an artefact of masked or obfuscated gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor, nn

from caat_app.attacks.common import (
    TINY,
    attack_mode,
    check_norm,
    is_batch_dependent,
    logit_margin,
    normalize_l2,
    per_sample,
    sample_size,
    subset_model,
)

# The original's schedule: p halves after each of these iterations (of a 10 000-query run).
_P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_REDRAWS = 8  # rounds of redrawing an L∞ proposal that would change nothing


def p_selection(p_init: float, it: int, queries: int, *, rescale: bool = True) -> float:
    """Fraction of pixels a square covers at iteration ``it``.

    The original halves p at fixed iterations of a 10 000-query run; ``rescale`` stretches
    that schedule onto ``queries`` (the reference's standalone default), otherwise the
    iteration counts as it is (AutoAttack's Square: ``resc_schedule=False``).
    """
    scaled = int(it / queries * 10000) if rescale else it
    return p_init / 2 ** sum(scaled > t for t in _P_HALVINGS)


def _margin(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-sample margin, ≤ 0 once the attack succeeded; the loss the search minimises."""
    margin = logit_margin(logits, y)
    return -margin if targeted else margin


def _signs(shape: tuple[int, ...], g: torch.Generator, like: Tensor) -> Tensor:
    """Random ±1 drawn from the attack's own generator."""
    bits = torch.randint(0, 2, shape, generator=g, device=like.device)
    return bits.to(like.dtype) * 2 - 1


def _windows(
    n: int, s: int, h: int, w: int, g: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """One random s×s window per sample: its (n, 1, h, w) mask and top-left corners (n, 1, 1)."""
    vh = torch.randint(0, h - s, (n, 1, 1), generator=g, device=device)
    vw = torch.randint(0, w - s, (n, 1, 1), generator=g, device=device)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    mask = (rows >= vh) & (rows < vh + s) & (cols >= vw) & (cols < vw + s)
    return mask[:, None], vh, vw


def _side(p: float, h: int, w: int, smallest: int) -> int:
    """Square side for the pixel fraction ``p``, at least ``smallest`` and leaving room to move."""
    s = max(round(math.sqrt(p * h * w)), smallest)
    if smallest > 1 and s % 2 == 0:  # L2 wants an odd side, so its pattern has a centre
        s += 1
    return max(min(s, min(h, w) - 1), 1)


# ---------------------------------------------------------------------------------------- L∞


def _linf_init(x: Tensor, eps: float, g: torch.Generator, clip: tuple[float, float]) -> Tensor:
    """Vertical stripes of ±ε (one sign per column and channel), the original's start."""
    n, c, _, w = x.shape
    return (x + eps * _signs((n, c, 1, w), g, x)).clamp(*clip)


def _linf_step(
    x: Tensor, best: Tensor, eps: float, p: float, g: torch.Generator, clip: tuple[float, float]
) -> Tensor:
    """Set one random square per sample to a fresh ±ε per channel (a vertex of the ε-box)."""
    n, c, h, w = x.shape
    s = _side(p, h, w, 1)
    mask, _, _ = _windows(n, s, h, w, g, x.device)
    vertex = (x + eps * _signs((n, c, 1, 1), g, x)).clamp(*clip)
    for _ in range(_REDRAWS):
        # A window already at the drawn vertex would spend a query on nothing: redraw its
        # signs, as the original does (a fixed number of rounds, decided on the device).
        same = ((vertex - best).abs() < 1e-7) | ~mask
        idle = per_sample(same.flatten(1).all(1), same)
        fresh = (x + eps * _signs((n, c, 1, 1), g, x)).clamp(*clip)
        vertex = torch.where(idle, fresh, vertex)
    return torch.where(mask, vertex, best)


# ----------------------------------------------------------------------------------------- L2


@lru_cache(maxsize=64)
def _eta_rectangles(hh: int, ww: int) -> Tensor:
    """Nested rectangles weighted 1/k², unit L2: the original's centred window pattern."""
    delta = torch.zeros(hh, ww)
    x_c, y_c = hh // 2 + 1, ww // 2 + 1
    r0, c0 = x_c - 1, y_c - 1
    for k in range(max(x_c, y_c)):
        delta[max(r0, 0) : min(r0 + 2 * k + 1, hh), max(c0, 0) : min(c0 + 2 * k + 1, ww)] += (
            1.0 / (k + 1) ** 2
        )
        r0, c0 = r0 - 1, c0 - 1
    return delta / delta.norm().clamp_min(TINY)


def square_pattern(s: int) -> Tensor:
    """The original's s×s window pattern, unit L2: the rectangle pattern of the top ⌊s/2⌋
    rows over the negated one of the other rows, so the window's two halves pull opposite
    ways (AutoAttack's ``eta``). Callers transpose it at random.
    """
    delta = torch.zeros(s, s)
    delta[: s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2 :] = -_eta_rectangles(s - s // 2, s)
    return delta / delta.norm().clamp_min(TINY)


def _l2_init(x: Tensor, eps: float, g: torch.Generator, clip: tuple[float, float]) -> Tensor:
    """Tiles of the two-rectangle pattern with random signs, renormalised to the ε-sphere."""
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    start = (h - s * 5) // 2
    delta = torch.zeros_like(x)
    tile = square_pattern(s).to(device=x.device, dtype=x.dtype)
    vh = start
    for _ in range(h // s):
        vw = start
        for _ in range(w // s):
            # The tile is transposed at random (a device-side choice, no host sync).
            flip = torch.rand((), generator=g, device=x.device) > 0.5
            pattern = torch.where(flip, tile.T, tile)
            window = delta[:, :, vh : vh + s, vw : vw + s]
            window += pattern[: window.shape[2], : window.shape[3]] * _signs((n, c, 1, 1), g, x)
            vw += s
        vh += s
    return (x + eps * normalize_l2(delta)).clamp(*clip)


def l2_proposal(
    x: Tensor, best: Tensor, eps: float, p: float, g: torch.Generator, clip: tuple[float, float]
) -> Tensor:
    """Move the mass of a second window into a first one, redrawn as the two-halves pattern.

    As the reference's L2 step: the first window gets `square_pattern` (transposed at
    random) with a random sign per channel plus its old content over its per-channel norm,
    rescaled per channel to √(max(ε² − ‖δ‖², 0)/c + ‖δ on both windows‖²), so it holds its
    own and the second window's budget and any budget left unused; the second window is
    emptied (where the two overlap, the first wins); the whole perturbation is put back on
    the ε-sphere and clipped to the box. Windows and transposition are drawn per sample.
    """
    n, c, h, w = x.shape
    s = _side(p, h, w, 3)
    delta = best - x
    mask1, vh, vw = _windows(n, s, h, w, g, x.device)
    mask2, _, _ = _windows(n, s, h, w, g, x.device)
    m1 = mask1.to(x.dtype)

    def channel_norm(t: Tensor) -> Tensor:
        return t.pow(2).sum((-2, -1), keepdim=True).sqrt()

    def sample_norm(t: Tensor) -> Tensor:
        return per_sample(sample_size(t, "l2"), t)

    norm_window1 = channel_norm(delta * m1)
    norm_image = sample_norm(delta)
    norm_windows = sample_norm(delta * (mask1 | mask2).to(x.dtype))
    # Each sample's pattern, transposed or not, placed at its own first window's corner.
    tile = square_pattern(s).to(device=x.device, dtype=x.dtype)
    flip = torch.rand((n, 1, 1), generator=g, device=x.device) > 0.5
    tiles = torch.where(flip, tile.T, tile)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) - vh).clamp(0, s - 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) - vw).clamp(0, s - 1)
    placed = tiles[torch.arange(n, device=x.device).view(n, 1, 1), rows, cols][:, None] * m1
    new = placed * _signs((n, c, 1, 1), g, x) + delta * m1 / (norm_window1 + TINY)
    budget = ((eps**2 - norm_image**2).clamp_min(0.0) / c + norm_windows**2).sqrt()
    new = new / (channel_norm(new) + TINY) * budget
    delta = torch.where(mask1, new, torch.where(mask2, torch.zeros_like(delta), delta))
    return (x + eps * normalize_l2(delta)).clamp(*clip)


# ------------------------------------------------------------------------------------ attack

_Init = Callable[[Tensor, float, torch.Generator, tuple[float, float]], Tensor]
_Step = Callable[[Tensor, Tensor, float, float, torch.Generator, tuple[float, float]], Tensor]


def _search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    init: _Init,
    step: _Step,
    *,
    eps: float,
    queries: int,
    p_of: Callable[[int], float],
    g: torch.Generator,
    targeted: bool,
    clip: tuple[float, float],
) -> Tensor:
    """The random search: per sample the lowest-margin point found, stopping once fooled.

    A batch-dependent model meets every proposal inside the whole batch, and since the
    batch that keeps some proposals is not the one that was queried, it is judged whole
    once more after each round (two queries a round), so a sample stops only when the
    batch it is returned in is fooled on it.
    """
    shared = is_batch_dependent(model)
    margin = _margin(model(x), y, targeted)
    stay = margin <= 0  # fooled before any change: left as it is, never queried again
    best = x.clone()

    def query(idx: Tensor, points: Tensor) -> Tensor:
        """Margins of ``points`` in the rows ``idx`` (with the rest of the batch if shared)."""
        return _margin(subset_model(model, best, idx, shared)(points), y[idx], targeted)

    idx = (~stay).nonzero().squeeze(1)
    if idx.numel() == 0:
        return best
    start = init(x[idx], eps, g, clip)
    margin[idx] = query(idx, start)
    best[idx] = start
    for it in range(queries - 1):
        idx = (margin > 0).nonzero().squeeze(1)  # one host sync per round
        if idx.numel() == 0:
            break
        x_cur, best_cur, margin_cur = x[idx], best[idx], margin[idx]
        proposal = step(x_cur, best_cur, eps, p_of(it), g, clip)
        m_new = query(idx, proposal)
        better = m_new < margin_cur
        best[idx] = torch.where(per_sample(better, proposal), proposal, best_cur)
        margin[idx] = torch.where(better, m_new, margin_cur)
        if shared:  # the batch that keeps some proposals is not the one queried
            margin = torch.where(stay, margin, _margin(model(best), y, targeted))
    return best


def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    rescale_schedule: bool = True,
    seed: int = 0,
    targeted: bool = False,
    clip: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Return the best point found per sample, inside the ε-ball around ``x`` and ``clip``.

    ``x`` is (N, C, H, W). Untargeted minimises ``z_y − max_{i≠y} z_i``; targeted makes the
    classes ``y`` win. A proposal is kept only if it lowers a sample's margin; a sample stops
    once it is fooled. Points already fooled (misclassified, or already the target) come back
    unchanged. Budget: one clean query per sample, then at most ``queries`` more (the start
    plus ``queries − 1`` proposals, as in the original), so at most ``queries + 1`` rows each
    (a batch-dependent model: see `_search`). Only still-robust samples are queried;
    deciding which costs one host sync per iteration. ``rescale_schedule`` stretches p's
    schedule onto ``queries`` (`p_selection`); AutoAttack turns it off.

    Differences from the original: both norms draw an independent window (and the L2
    pattern's transposition) per sample (AutoAttack's PyTorch port shares one across the
    batch; the original's L∞ draws one per image), the margin is the loss in the targeted
    case too (AutoAttack uses cross-entropy there), and an L∞ proposal that would change
    nothing is redrawn as in the original's numpy version (AutoAttack does not), for at most
    a fixed number of rounds so that the choice stays on the device. Deterministic for a
    ``seed`` on a device.
    """
    check_norm(norm)
    x = x.detach()
    if eps == 0 or queries <= 0:
        return x.clone()
    if x.dim() != 4 or min(x.shape[2], x.shape[3]) < 2:
        raise ValueError(f"square needs (N, C, H, W) images of side ≥ 2, got {tuple(x.shape)}")
    init, step = (_linf_init, _linf_step) if norm == "linf" else (_l2_init, l2_proposal)
    g = torch.Generator(device=x.device)
    g.manual_seed(seed)
    with attack_mode(model), torch.no_grad():
        return _search(
            model,
            x,
            y,
            init,
            step,
            eps=eps,
            queries=queries,
            p_of=lambda it: p_selection(p_init, it, queries, rescale=rescale_schedule),
            g=g,
            targeted=targeted,
            clip=clip,
        )
