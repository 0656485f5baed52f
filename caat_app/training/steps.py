"""What a training step records, and the recorder that copies it off the device.

`StepMetrics` is the one definition of the recorded step fields: the step builds it by
name and stacks it into one device vector, and the recorder names that vector's columns
with `STEP_FIELDS`, its `_fields`. A field added here is stacked and stored in the same
order everywhere, with no second list to keep in step by hand.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import torch
from torch import Tensor

from caat_app.training.sinks import Sink

_COPY_SECONDS = 0.5


class StepMetrics(NamedTuple):
    """One step's numbers, each a 0-d tensor still on the device (no host sync)."""

    loss_c: Tensor  # clean loss, whose gradient is g_c
    loss_a: Tensor  # adversarial loss, whose gradient is g_a
    acc_c: Tensor  # clean accuracy of the batch
    acc_a: Tensor  # accuracy on the attacked batch
    phi: Tensor  # cos(g_c, g_a)
    mu: Tensor  # conflict ‖g_c‖·‖g_a‖·(1 − φ)
    norm_c: Tensor
    norm_a: Tensor
    coef_c: Tensor  # weight of g_c in the step taken
    projected: Tensor  # 1 when CA-AT rotated g_a onto the cone (mean over segments)
    skipped: Tensor  # 1 when the update was skipped (non-finite gradients)

    def stack(self) -> Tensor:
        """The fields as one float vector in `STEP_FIELDS` order: one device write per step."""
        return torch.stack(self)


STEP_FIELDS: tuple[str, ...] = StepMetrics._fields


class StepRecorder:
    """Collects each step's metric vector on the device; copies a block to the sink.

    The copy (`.tolist()`, the loop's only host sync) happens every `log_every`
    steps or every half second, whichever comes first, and at the end of an epoch.
    """

    def __init__(self, sink: Sink, log_every: int, device: torch.device) -> None:
        self.sink = sink
        self.buf = torch.zeros(log_every, len(STEP_FIELDS), device=device)
        self.epoch_sum = torch.zeros(len(STEP_FIELDS), device=device)
        self.pending: list[tuple[int, int, float, float]] = []  # step, epoch, t, lr
        self.start = self.last_copy = time.perf_counter()
        self.nonfinite = 0  # skipped steps among those copied out so far
        self.epoch_steps = 0

    def start_epoch(self) -> None:
        self.epoch_sum.zero_()
        self.epoch_steps = 0

    def record(self, metrics: Tensor, step: int, epoch: int, lr: float) -> bool:
        """Keep one step's stacked `StepMetrics`; True when this call copied a block out."""
        now = time.perf_counter()
        self.buf[len(self.pending)] = metrics
        self.epoch_sum += metrics
        self.epoch_steps += 1
        self.pending.append((step, epoch, now - self.start, lr))
        if len(self.pending) == len(self.buf) or now - self.last_copy > _COPY_SECONDS:
            self.copy_out()
            return True
        return False

    def copy_out(self) -> None:
        """Hand the pending steps to the sink as rows; `nonfinite` counts their skips."""
        if not self.pending:
            return
        values = self.buf[: len(self.pending)].tolist()
        rows = []
        for (step, epoch, t, lr), vals in zip(self.pending, values, strict=True):
            row: dict[str, Any] = {"step": step, "epoch": epoch, "t": t, "lr": lr}
            row.update(zip(STEP_FIELDS, vals, strict=True))
            row["skipped"] = bool(row["skipped"])
            self.nonfinite += row["skipped"]
            rows.append(row)
        self.pending.clear()
        self.last_copy = time.perf_counter()
        self.sink.steps(rows)

    def epoch_means(self) -> dict[str, float]:
        """Each field's mean over the epoch's steps (one host read, at the epoch's end)."""
        means = (self.epoch_sum / max(self.epoch_steps, 1)).tolist()
        return dict(zip(STEP_FIELDS, means, strict=True))
