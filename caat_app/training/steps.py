"""What a training step records, and the recorder that copies it off the device.

`StepMetrics` is the one definition of the recorded step fields: the step builds it by
name and stacks it into one device vector, and the recorder names that vector's columns
with `STEP_FIELDS`, its `_fields`. A field added here is stacked and stored in the same
order everywhere, with no second list to keep in step by hand.

`LayerRecorder` does the same for the opt-in per-layer conflict (`layer_stats`): every
N steps one (4, L) device tensor of φ, μ, ‖g_c‖, ‖g_a‖ per parameter tensor, copied
out together with the step block, so it adds no host sync of its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from caat_app.method.conflict import Conflict
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
LAYER_FIELDS: tuple[str, ...] = Conflict._fields
"""The per-layer columns, in the order of a `segment_conflict` stacked into (4, L)."""


class LayerRecorder:
    """Keeps every `every`-th step's per-layer conflict on the device until a copy-out.

    `names` and `sizes` are the parameter tensors in flat-buffer order: the layers a
    row's `layer` index points into, handed to the sink with every batch of rows.
    """

    def __init__(self, sink: Sink, names: Sequence[str], sizes: Sequence[int], every: int) -> None:
        if every < 1:
            raise ValueError(f"every: expected at least 1, got {every}")
        self.sink = sink
        self.names, self.sizes = tuple(names), tuple(sizes)
        self.every = every
        self.pending: list[tuple[int, int, Tensor]] = []  # step, epoch, (4, L) stats

    def due(self, step: int) -> bool:
        """True on the steps whose layers are recorded: 0, N, 2N, …"""
        return step % self.every == 0

    def record(self, stats: Tensor, step: int, epoch: int) -> None:
        """Keep one step's stacked per-layer `Conflict` (still on the device)."""
        self.pending.append((step, epoch, stats))

    def copy_out(self) -> None:
        """Hand the pending steps to the sink, one row per step and layer."""
        if not self.pending:
            return
        values = torch.stack([stats for _, _, stats in self.pending]).tolist()
        rows = []
        for (step, epoch, _), block in zip(self.pending, values, strict=True):
            for layer, vals in enumerate(zip(*block, strict=True)):
                row: dict[str, Any] = {"step": step, "epoch": epoch, "layer": layer}
                row.update(zip(LAYER_FIELDS, vals, strict=True))
                rows.append(row)
        self.pending.clear()
        self.sink.layers(self.names, self.sizes, rows)


class StepRecorder:
    """Collects each step's metric vector on the device; copies a block to the sink.

    The copy (`.tolist()`, the loop's only host sync) happens every `log_every`
    steps or every half second (`timed`; a distributed run copies on steps only, so its
    ranks count skipped steps alike), whichever comes first, and at the end of an epoch;
    the per-layer statistics of `layers`, when given, are copied out with it.
    """

    def __init__(
        self,
        sink: Sink,
        log_every: int,
        device: torch.device,
        layers: LayerRecorder | None = None,
        timed: bool = True,
    ) -> None:
        self.sink = sink
        self.copy_seconds = _COPY_SECONDS if timed else float("inf")  # ranks copy in step
        self.layers = layers
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
        if len(self.pending) == len(self.buf) or now - self.last_copy > self.copy_seconds:
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
        if self.layers is not None:  # after the sync above: a plain copy
            self.layers.copy_out()

    def epoch_means(self) -> dict[str, float]:
        """Each field's mean over the epoch's steps (one host read, at the epoch's end)."""
        means = (self.epoch_sum / max(self.epoch_steps, 1)).tolist()
        return dict(zip(STEP_FIELDS, means, strict=True))
