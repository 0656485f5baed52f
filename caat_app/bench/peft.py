"""`caat bench --model M --peft P`: what an adversarial fine-tuning step of a transformer
costs, in images per second and peak memory, on the device it runs on.

The inputs are synthetic (uniform random pixels, random labels of 200 classes, CUB's
count) and the base weights random: a step's cost depends on shapes, not on values, and
a speed benchmark should not need the checkpoints or the data sets. The ImageNet
transformers run at 224×224, the CPU-sized `-micro` ones at 32×32. Vanilla AT and CA-AT
are timed one after the other, each with only its own trainer alive, so that each peak
is its own: on CUDA `torch.cuda.max_memory_allocated` over the timed steps (model, data
and the step's work), on the CPU the rise of the process's peak resident set over the
resident set before the timed steps (the step's work only; Linux resets the peak
through /proc/self/clear_refs).
"""

from __future__ import annotations

import gc
import statistics
from pathlib import Path
from typing import Any

import torch

from caat_app.bench.training import _time_steps, sync
from caat_app.config import build_config
from caat_app.data.splits import DataSplits
from caat_app.models.registry import MODELS
from caat_app.present import format_budget
from caat_app.training.sinks import NullSink
from caat_app.training.trainer import Trainer

CLASSES = 200
"""Synthetic labels: CUB-200-2011's class count, so the head has its real size."""

MICRO_SIZE = 32
"""The side the CPU-sized transformers are timed at (digits upscaled, as in the smoke path)."""

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def bench_size(model: str) -> int:
    """224 for the ImageNet transformers, 32 for the CPU-sized ones."""
    return 224 if MODELS[model].normalization == "imagenet" else MICRO_SIZE


def synthetic_data(size: int, count: int, seed: int = 0) -> DataSplits:
    """`count` random RGB images of side `size` in [0, 1] with random labels, every split."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((count, 3, size, size), generator=gen)
    y = torch.randint(0, CLASSES, (count,), generator=gen)
    half = (0.5, 0.5, 0.5)
    return DataSplits("synthetic", x, y, x, y, x, y, CLASSES, 3, size, half, half)


def _rss_kib() -> tuple[int, int] | None:
    """(current, peak) resident set in KiB from /proc, or None off Linux."""
    try:
        lines = _STATUS.read_text().splitlines()
    except OSError:
        return None
    found = {ln.split(":")[0]: int(ln.split()[1]) for ln in lines if ln.startswith("Vm")}
    if "VmRSS" not in found or "VmHWM" not in found:
        return None
    return found["VmRSS"], found["VmHWM"]


def _reset_peak(device: torch.device) -> int | None:
    """Start a fresh peak; the CPU's baseline resident set in KiB (None: not measurable)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0
    try:
        _CLEAR_REFS.write_text("5")  # Linux ≥ 4.0: VmHWM := VmRSS
    except OSError:
        return None
    rss = _rss_kib()
    return rss[0] if rss else None


def _peak_mib(device: torch.device, baseline: int | None) -> float | None:
    """The peak since `_reset_peak`: CUDA's allocated bytes, or the CPU's rise in RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = _rss_kib()
    if baseline is None or rss is None:
        return None
    return max(rss[1] - baseline, 0) / 1024


def _time_method(
    options: dict[str, Any], data: DataSplits, steps: int, repeats: int
) -> dict[str, Any]:
    """Median seconds per step and peak memory of one method's steps, then its memory freed."""
    trainer = Trainer(build_config(options), NullSink(), data=data)
    dev, batch = trainer.device, options["batch_size"]
    pool = len(trainer.y_train) // batch
    batches = [
        (trainer.x_train[i * batch : (i + 1) * batch], trainer.y_train[i * batch : (i + 1) * batch])
        for i in (s % pool for s in range(steps))
    ]
    _time_steps(trainer.train_step, batches[:1], dev)  # warm-up: allocator, autotuning
    sync(dev)
    baseline = _reset_peak(dev)
    seconds = statistics.median(
        _time_steps(trainer.train_step, batches, dev) for _ in range(repeats)
    )
    peak = _peak_mib(dev, baseline)
    params = list(trainer.model.parameters())
    result = {
        "ms_per_step": 1000 * seconds,
        "images_per_sec": batch / seconds,
        "peak_mib": peak,
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "parameters": sum(p.numel() for p in params),
        "device": str(dev),
        "eps": trainer.config.eps,
    }
    del trainer, batches, params
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return result


def peft_bench(
    *,
    model: str,
    peft: str = "full",
    batch_size: int = 32,
    attack_steps: int = 10,
    steps: int = 10,
    repeats: int = 3,
    device: str = "auto",
    bf16: bool = False,
    grad_checkpointing: bool = False,
) -> dict[str, Any]:
    """Time Vanilla AT and CA-AT steps of `model` fine-tuned by `peft`; a JSON-able report.

    A model or mode that does not fit (a CNN with adapters) is a ConfigError, one line.
    """
    size = bench_size(model)
    common = {
        "model": model,
        "peft": peft,
        "dataset": "imagefolder",
        "eps": 4 / 255,
        "batch_size": batch_size,
        "attack_steps": attack_steps,
        "device": device,
        "epochs": 1,
        "bf16": bf16,
        "grad_checkpointing": grad_checkpointing,
    }
    build_config({**common, "method": "caat"})  # a bad combination fails before any work
    data = synthetic_data(size, batch_size * min(steps, 2))
    kinds = {
        kind: _time_method({**common, "method": kind}, data, steps, repeats)
        for kind in ("vanilla", "caat")
    }
    first = kinds["caat"]
    dev = torch.device(first["device"])
    return {
        "device": first["device"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": model,
        "peft": peft,
        "image_size": size,
        "inputs": f"synthetic: random pixels, {CLASSES} classes, random base weights",
        "batch_size": batch_size,
        "attack": f"pgd-{attack_steps} linf eps={format_budget(first['eps'])}",
        "bf16": bf16 and dev.type == "cuda",
        "grad_checkpointing": grad_checkpointing,
        "trainable": first["trainable"],
        "parameters": first["parameters"],
        "memory": "peak allocated (CUDA)" if dev.type == "cuda" else "peak RSS delta (CPU)",
        "steps": {
            kind: {k: v for k, v in r.items() if k in ("ms_per_step", "images_per_sec", "peak_mib")}
            for kind, r in kinds.items()
        },
        "repeats": repeats,
        "steps_per_repeat": steps,
    }


def _rate(value: float) -> str:
    """Images per second with three significant digits (a CPU's 0.147 as much as 1,234)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def peft_lines(report: dict[str, Any]) -> list[str]:
    """The report as a person reads it: a heading, then one line per method."""
    extras = [", bf16"] if report["bf16"] else []
    extras += [", grad checkpointing"] if report["grad_checkpointing"] else []
    head = (
        f"caat bench: {report['model']}+{report['peft']} at {report['image_size']}×"
        f"{report['image_size']}, batch {report['batch_size']}, {report['attack']}, "
        f"{report['device']}{''.join(extras)}; {report['trainable']:,} of "
        f"{report['parameters']:,} parameters train; inputs {report['inputs']}"
    )
    lines = [head]
    for kind, label in (("vanilla", "Vanilla AT"), ("caat", "CA-AT")):
        r = report["steps"][kind]
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:,.0f} MiB"
        lines.append(
            f"  {label}: {_rate(r['images_per_sec'])} images / s ({r['ms_per_step']:,.0f} ms / "
            f"step), {report['memory']} {peak}"
        )
    return lines
