"""How much arithmetic a step does, and how much the device could do: achieved TFLOP/s.

A forward pass is counted, not looked up: PyTorch's `FlopCounterMode` adds up the
matrix products and convolutions of one forward (2 FLOP per multiply-add; BatchNorm,
activations and the like are not counted, as in the usual GFLOP figures). A step's cost
is that times its forward-equivalents per image (`STEP_PASSES`, from the analytic model
of `caat paper estimate`: a backward with weight gradients is 2 forwards, an attack
step's input-only backward 1), so achieved TFLOP/s = forward-equivalents × forward
FLOPs × images/s.

The device's peak comes from a small table of datasheet figures (dense, without
sparsity) by device name and precision; a device not in it has no peak, and no share of
it is shown. On CUDA fp32 convolutions run in TF32 unless `torch.backends.cudnn.
allow_tf32` is off, so their peak is the TF32 one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from caat_app.config import RunConfig
from caat_app.paper.estimate import train_passes


@dataclass(frozen=True)
class Peak:
    """A device's dense peak in TFLOP/s per precision (datasheet, no sparsity)."""

    bf16: float
    tf32: float
    fp32: float


# Searched in order: the first name contained in the device's name wins, so the PCIe and
# NVL variants come before the plain (SXM) names.
PEAKS: tuple[tuple[str, Peak], ...] = (
    ("H100 PCIe", Peak(bf16=756.0, tf32=378.0, fp32=51.0)),
    ("H100 NVL", Peak(bf16=835.5, tf32=417.5, fp32=60.0)),
    ("H200 NVL", Peak(bf16=835.5, tf32=417.5, fp32=60.0)),
    ("H100", Peak(bf16=989.4, tf32=494.7, fp32=66.9)),
    ("H200", Peak(bf16=989.4, tf32=494.7, fp32=66.9)),
    ("A100", Peak(bf16=312.0, tf32=156.0, fp32=19.5)),
)


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The dense peak of a device (by its name) at `precision` (bf16, tf32, fp32); None when
    the device is not in the table."""
    for key, peak in PEAKS:
        if key.lower() in device_name.lower():
            return float(getattr(peak, precision))
    return None


def device_name(device: torch.device) -> str:
    """The GPU's name (e.g. "NVIDIA H200"), or "cpu"."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return device.type


def precision(config: RunConfig, device: torch.device) -> str:
    """What the step's matrix arithmetic runs in: bf16 (autocast), tf32 or fp32."""
    if device.type != "cuda":
        return "fp32"
    if config.bf16:
        return "bf16"
    return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"


def count_flops(model: nn.Module, x: Tensor) -> int:
    """FLOPs of one forward pass of `model` over the batch `x`, as FlopCounterMode counts."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()  # no BatchNorm statistics updated by counting; the same products
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def forward_flops_per_image(model: nn.Module, x: Tensor) -> float:
    """FLOPs of one forward pass per image, counted on the batch `x` (two images suffice)."""
    return count_flops(model, x) / len(x)


def step_passes(kind: str, config: RunConfig, classes: int) -> int:
    """Forward-equivalents per image of a step: clean training 3 (forward, backward with
    weight gradients), Vanilla AT and CA-AT the analytic model's (PGD-10: 2·10 + 3 + 3 = 26;
    caat's Vanilla AT also computes g_c and g_a apart, so it costs what CA-AT does)."""
    return 3 if kind == "clean" else train_passes(config, classes)


def achieved(
    passes: int, forward_flops: float, images_per_sec: float, peak: float | None
) -> dict[str, float | None]:
    """Achieved TFLOP/s of a step and its share of the peak (None without a peak)."""
    tflops = passes * forward_flops * images_per_sec / 1e12
    return {
        "forward_equivalents": passes,
        "tflops": tflops,
        "peak_share": None if not peak else tflops / peak,
    }
