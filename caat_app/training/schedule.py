"""Learning-rate (and momentum) schedules: pure functions of the step, so a resumed run agrees.

Torch-free: the config reads `SCHEDULES` for its choices.

- `linear`: caat's one-cycle, per step: linear warm-up to the peak over the first 40 %
  of the steps, then linearly down to 0. The momentum stays `--momentum`.
- `cosinew`: the official CA-AT code's schedule (`core/utils/train.py`, scheduler
  `cosinew`, the one its released checkpoints' `args.txt` name): PyTorch's `OneCycleLR`
  with `pct_start=0.025` over `total_steps = epochs`, stepped once per epoch. So the rate
  is constant within an epoch: cosine warm-up from peak/25 to the peak over the first
  2.5 % of the epochs, then cosine annealing to peak/25/10⁴; the momentum cycles the
  other way, 0.95 → 0.85 → 0.95, and replaces `--momentum`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

SCHEDULES = ("linear", "cosinew")
SCHEDULE_HELP = {
    "linear": "per step: linear up over 40 % of the steps, then down to 0",
    "cosinew": "the official code's per-epoch OneCycleLR (cosine, 2.5 % warm-up, "
    "momentum 0.95↔0.85)",
}

# PyTorch's OneCycleLR defaults, which the official code leaves as they are.
_PCT_START = 0.025
_DIV_FACTOR = 25.0
_FINAL_DIV_FACTOR = 1e4
_MOMENTUM_LOW, _MOMENTUM_HIGH = 0.85, 0.95


class Rate(NamedTuple):
    """The step's learning rate, and its momentum when the schedule sets one."""

    lr: float
    momentum: float | None


def one_cycle(step: int, total: int, peak: float) -> float:
    """Linear warm-up to `peak` over the first 40% of the steps, then down to 0."""
    t = (step + 0.5) / max(total, 1)
    return peak * (t / 0.4 if t < 0.4 else max(0.0, (1.0 - t) / 0.6))


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def cosinew(epoch: int, epochs: int, peak: float) -> Rate:
    """OneCycleLR(max_lr=peak, pct_start=0.025, total_steps=epochs) after `epoch` steps."""
    low = peak / _DIV_FACTOR
    phases = (
        (_PCT_START * epochs - 1.0, low, peak, _MOMENTUM_HIGH, _MOMENTUM_LOW),
        (epochs - 1.0, peak, low / _FINAL_DIV_FACTOR, _MOMENTUM_LOW, _MOMENTUM_HIGH),
    )
    begin = 0.0
    for k, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if epoch <= end or k == len(phases) - 1:
            span = end - begin  # 0 at 40 epochs, where PyTorch divides by zero
            pct = (epoch - begin) / span if span else 1.0
            return Rate(_cos(lr0, lr1, pct), _cos(m0, m1, pct))
        begin = end
    raise AssertionError("unreachable")  # pragma: no cover


def rate(name: str, step: int, steps_per_epoch: int, epochs: int, peak: float) -> Rate:
    """The schedule `name` at training step `step` (0-based, over the whole run)."""
    if name == "linear":
        return Rate(one_cycle(step, steps_per_epoch * epochs, peak), None)
    if name == "cosinew":
        return cosinew(step // max(steps_per_epoch, 1), epochs, peak)
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
