"""The learning-rate schedule: a pure function of the step, so a resumed run agrees."""

from __future__ import annotations


def one_cycle(step: int, total: int, peak: float) -> float:
    """Linear warm-up to `peak` over the first 40% of the steps, then down to 0."""
    t = (step + 0.5) / max(total, 1)
    return peak * (t / 0.4 if t < 0.4 else max(0.0, (1.0 - t) / 0.6))
