"""Which device a run trains on, and its mixed precision: asked once, checked before work starts."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from caat_app.errors import CaatError


class TrainError(CaatError):
    """An expected failure before training starts (no CUDA, no data), in one line."""


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for a missing GPU is a TrainError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainError(
                f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, transformer: bool) -> torch.memory_format:
    """channels_last for a CNN on CUDA (tensor-core convolutions want NHWC), else as is.

    A resume checkpoint's optimiser state follows the layout, so a run resumes on the
    kind of device it started on.
    """
    if device.type == "cuda" and not transformer:
        return torch.channels_last
    return torch.contiguous_format
