"""`caat bench`: what a training step and an evaluation cost, measured rather than asserted.

Clean training, Vanilla AT and CA-AT are timed on the same model, batch and attack,
in interleaved repeats (so drift on a shared machine hits all three alike), and the
median per-step time of each is reported. The logging line times exactly what the
trainer does per step to record metrics (`StepRecorder`), feeding the real store
sink and batched writer over a temporary SQLite store. The layer-stats line times what
`--layer-stats N` adds: one per-layer snapshot (computed, copied out, stored) every N
steps, as a median, so a shared machine's hiccups do not pass for its cost.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from caat_app.config import build_config
from caat_app.data.splits import load_dataset
from caat_app.method.losses import clean_loss
from caat_app.runs.worker import StopFlag, StoreSink
from caat_app.training.sinks import NullSink
from caat_app.training.steps import LayerRecorder, StepRecorder
from caat_app.training.trainer import Trainer
from caat_storage import BatchWriter, Store

LAYER_EVERY = 20
"""The interval `caat bench` times per-layer conflict at, and the README recommends."""


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a timer measures it and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clean_step(trainer: Trainer, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> None:
    """Standard training on the same flat buffers and optimiser: the baseline."""
    flat = trainer.flat
    flat.zero_grads()
    with trainer.autocast():
        loss = clean_loss(trainer.model(xb), yb)
    flat.grad_into(0)
    loss.backward()
    torch.mul(flat.grads[0], 1.0, out=trainer.direction)
    trainer.opt.step(trainer.direction, lr, torch.ones((), dtype=torch.bool, device=xb.device))


def _time_steps(
    fn: Any,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> float:
    """Seconds per call of `fn(xb, yb, lr)` over the batches, synchronised at both ends."""
    sync(device)
    start = time.perf_counter()
    for xb, yb in batches:
        fn(xb, yb, 0.01)
    sync(device)
    return (time.perf_counter() - start) / len(batches)


def run_bench(
    *,
    model: str = "cnn",
    batch_size: int = 128,
    attack_steps: int = 10,
    steps: int = 30,
    repeats: int = 5,
    device: str = "auto",
    layer_every: int = LAYER_EVERY,
) -> dict[str, Any]:
    """Time the three kinds of step and what recording costs; returns a JSON-able report."""
    data = load_dataset("digits")
    common = {
        "model": model,
        "batch_size": batch_size,
        "attack_steps": attack_steps,
        "device": device,
        "epochs": 1,
    }
    vanilla = Trainer(build_config({**common, "method": "vanilla"}), NullSink(), data=data)
    caat = Trainer(build_config({**common, "method": "caat"}), NullSink(), data=data)
    dev = caat.device
    batches = fixed_batches(caat, steps, batch_size)
    kinds = {
        "clean": lambda xb, yb, lr: clean_step(vanilla, xb, yb, lr),
        "vanilla": vanilla.train_step,
        "caat": caat.train_step,
    }
    per_step = median_seconds(kinds, batches, repeats, dev)
    log_seconds, logged_steps = _time_logging(caat, batches, repeats)
    layer_ms = 1000 * _time_layer_stats(caat, layer_every, snapshots=max(10, 4 * repeats))
    step_ms = {k: 1000 * v for k, v in per_step.items()}
    log_ms = 1000 * log_seconds / logged_steps
    return {
        "device": str(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": model,
        "dataset": "digits",
        "batch_size": batch_size,
        "attack": f"pgd-{attack_steps} linf eps={caat.config.eps:g}",
        "ms_per_step": step_ms,
        "images_per_sec": {k: batch_size / v for k, v in per_step.items()},
        "ratio_vanilla_vs_clean": per_step["vanilla"] / per_step["clean"],
        "ratio_caat_vs_clean": per_step["caat"] / per_step["clean"],
        "ratio_caat_vs_vanilla": per_step["caat"] / per_step["vanilla"],
        "logging_ms_per_step": log_ms,
        "logging_overhead": log_ms / step_ms["caat"],
        "layer_stats": {
            "every": layer_every,
            "layers": len(caat.flat.sizes),
            "ms_per_step": layer_ms,
            "overhead": layer_ms / step_ms["caat"],
            "caat_ms_per_step_without": step_ms["caat"] + log_ms,
            "caat_ms_per_step_with": step_ms["caat"] + log_ms + layer_ms,
        },
        "repeats": repeats,
        "steps_per_repeat": steps,
    }


def fixed_batches(
    trainer: Trainer, steps: int, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` random training batches, the same ones for every kind of step timed."""
    gen = torch.Generator().manual_seed(0)
    n = len(trainer.y_train)
    batches = []
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen).to(trainer.device)
        batches.append((trainer.x_train[idx], trainer.y_train[idx]))
    return batches


def median_seconds(
    kinds: dict[str, Any],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    repeats: int,
    device: torch.device,
) -> dict[str, float]:
    """Median seconds per step of each kind, over interleaved repeats after a warm-up."""
    for fn in kinds.values():  # warm-up: allocator, cuDNN autotuning, lazy init
        _time_steps(fn, batches[:3], device)
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):
        for kind, fn in kinds.items():
            samples[kind].append(_time_steps(fn, batches, device))
    return {k: statistics.median(v) for k, v in samples.items()}


def _time_logging(
    trainer: Trainer, batches: list[tuple[torch.Tensor, torch.Tensor]], repeats: int
) -> tuple[float, int]:
    """Seconds spent recording metrics over real CA-AT steps into a real store."""
    dev = trainer.device
    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{Path(tmp) / 'b.db'}") as st:
        writer = BatchWriter(st, _bench_run(st, trainer))
        recorder = StepRecorder(StoreSink(writer, StopFlag()), trainer.config.log_every, dev)
        spent, count = 0.0, 0
        for _ in range(repeats):
            for xb, yb in batches:
                metrics = trainer.train_step(xb, yb, 0.01)
                sync(dev)  # the GPU's queued work is the step's cost, not logging's
                start = time.perf_counter()
                recorder.record(metrics, count, 1, 0.01)
                spent += time.perf_counter() - start
                count += 1
        start = time.perf_counter()
        recorder.copy_out()
        writer.flush()
        spent += time.perf_counter() - start
    return spent, count


def _time_layer_stats(trainer: Trainer, every: int, snapshots: int) -> float:
    """Seconds per step that per-layer conflict every `every` steps adds.

    The median cost of one snapshot of the last step's gradients, over `every`: computed
    on the device, copied out, turned into rows and written to a real store. Each
    snapshot is written in a transaction of its own, where training shares the step
    rows' one: an upper bound. The first snapshot (it also names the layers) is a warm-up.
    """
    dev = trainer.device
    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{Path(tmp) / 'l.db'}") as st:
        writer = BatchWriter(st, _bench_run(st, trainer))
        layers = LayerRecorder(
            StoreSink(writer, StopFlag()), trainer.layer_names, trainer.flat.sizes, every
        )
        samples = []
        for i in range(snapshots + 1):
            sync(dev)
            start = time.perf_counter()
            layers.record(trainer.layer_conflict(), i * every, 1)
            layers.copy_out()
            writer.flush()
            samples.append(time.perf_counter() - start)
    return statistics.median(samples[1:]) / every


def _bench_run(store: Store, trainer: Trainer) -> int:
    """A run in a bench's temporary store for the recorded rows to belong to."""
    return store.create_run(
        name="bench",
        config={},
        method="caat",
        param=0.8,
        dataset="digits",
        model=trainer.config.model,
        eps=0.3,
        epochs_total=1,
    )
