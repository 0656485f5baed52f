"""Pure helpers that turn metric series into something a terminal plot can draw.

No Textual, no plotext, no torch: these run on every redraw of the monitor's
charts, so they stay plain-Python, O(n) and easy to test on their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["downsample", "ema", "eta_seconds", "log10_ticks"]


def _finite_pairs(
    xs: Sequence[float], ys: Sequence[float | None]
) -> tuple[list[float], list[float]]:
    """Drop points whose y is None, NaN or ±inf: plotext cannot place them."""
    try:
        # Fast path, all in C: a None raises, a NaN or inf makes the sum non-finite.
        clean = math.isfinite(sum(ys))  # type: ignore[arg-type]
    except TypeError:
        clean = False
    if clean:
        return list(xs), list(ys)  # type: ignore[arg-type]
    isfinite = math.isfinite
    keep = [i for i, y in enumerate(ys) if y is not None and isfinite(y)]
    return [xs[i] for i in keep], [ys[i] for i in keep]  # type: ignore[misc]


def downsample(
    xs: Sequence[float], ys: Sequence[float | None], width: int
) -> tuple[list[float], list[float]]:
    """Reduce a series to about ``2 * width`` points for a plot ``width`` cells wide.

    A plot cannot show more than a couple of points per cell, and plotext's cost
    grows with the number of points, so a 100 000-step run is cut down to each
    bucket's min and max (in x order) before drawing. Keeping both extremes means
    a loss spike or a φ dip still shows. The first and last points are kept too,
    so the x range does not shrink: at most ``2 * width + 2`` points come back.

    Non-finite y values (None, NaN, ±inf) are dropped first. A series that already
    fits comes back unchanged, as new lists.

    Cost: one pass to filter plus one C-level ``min``/``max``/``index`` per bucket
    slice; 100 000 points take a few milliseconds (well under 50 ms), so it is
    safe to call on every redraw. There is no timing assert in the tests; measure
    with ``caat bench`` instead.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length: {len(xs)} != {len(ys)}")
    fx, fy = _finite_pairs(xs, ys)
    width = max(int(width), 1)
    n = len(fy)
    if n <= 2 * width + 2:
        return fx, fy

    out_idx: list[int] = [0]
    for b in range(width):
        lo = b * n // width
        hi = (b + 1) * n // width
        if hi <= lo:
            continue
        chunk = fy[lo:hi]
        i_min = lo + chunk.index(min(chunk))
        i_max = lo + chunk.index(max(chunk))
        first, second = (i_min, i_max) if i_min <= i_max else (i_max, i_min)
        if first != out_idx[-1]:
            out_idx.append(first)
        if second != out_idx[-1]:
            out_idx.append(second)
    if out_idx[-1] != n - 1:
        out_idx.append(n - 1)
    return [fx[i] for i in out_idx], [fy[i] for i in out_idx]


def ema(ys: Sequence[float | None], alpha: float) -> list[float]:
    """Exponential moving average, ``s = alpha * y + (1 - alpha) * s``.

    Noisy per-step losses are hard to read; the smoothing toggle uses this.
    ``alpha = 1`` returns the input unchanged. A None or NaN input does not move
    the average and comes out as NaN, so the result stays aligned with its x
    values; ``downsample`` then drops those points.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    nan = math.nan
    out: list[float] = []
    append = out.append
    state: float | None = None
    keep = 1.0 - alpha
    for y in ys:
        if y is None or y != y:
            append(nan)
            continue
        state = y if state is None else alpha * y + keep * state
        append(state)
    return out


def _tick_label(mantissa: int, exponent: int) -> str:
    """Label ``mantissa * 10**exponent`` short: decimals near 1, ``2e-5`` style far away."""
    if -2 <= exponent <= 2:
        value = mantissa * 10.0**exponent
        return f"{value:.{max(-exponent, 0)}f}"
    return f"{mantissa}e{exponent}"


def log10_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick positions and labels for a linear axis that shows ``log10(values)``.

    plotext's own log scale raises on the second build (every redraw), so charts
    plot ``log10(y)`` on a linear axis and label it with these ticks. ``lo`` and
    ``hi`` are in log10 space (e.g. -3.2 and 0.4). Ticks are trimmed to the range:
    the first is the last one at or below ``lo``, the last the first one at or
    above ``hi``, so setting the axis limits to the end ticks shows all of them.
    Wide ranges skip decades (about eight ticks at most); narrow ones add 2 and 5,
    or every digit, between decades so a 0.3–0.6 loss still gets labels.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [], []
    if lo > hi:
        lo, hi = hi, lo
    span = hi - lo
    step = max(1, math.ceil((math.ceil(hi) - math.floor(lo)) / 7))
    if step > 1 or span >= 2.0:
        mantissas: tuple[int, ...] = (1,)
    elif span >= 0.5:
        mantissas = (1, 2, 5)
    else:
        mantissas = tuple(range(1, 10))

    first = math.floor(lo) // step * step  # skipped decades sit on multiples of step
    candidates: list[tuple[float, str]] = []
    exponent = first
    while True:
        for m in mantissas:
            candidates.append((exponent + math.log10(m), _tick_label(m, exponent)))
        if exponent > hi:
            break
        exponent += step
    # Tolerance so that lo == log10(0.2) keeps its own tick despite rounding.
    eps = 1e-9
    start = max(i for i, (t, _) in enumerate(candidates) if t <= lo + eps)
    stop = min(i for i, (t, _) in enumerate(candidates) if t >= hi - eps)
    if stop == start:
        stop += 1  # a single point still gets an axis with two labels
    chosen = candidates[start : stop + 1]
    return [t for t, _ in chosen], [label for _, label in chosen]


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the average pace so far; None while there is no pace yet.

    Uses the mean rate over the whole run rather than the last step so the ETA
    does not jump around with evaluation pauses.
    """
    if total <= 0 or done <= 0 or not math.isfinite(elapsed) or elapsed < 0:
        return None
    if done >= total:
        return 0.0
    return elapsed / done * (total - done)
