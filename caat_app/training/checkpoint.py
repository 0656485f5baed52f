"""Checkpoints: the model and optimiser state, written so a reader never sees half a file.

`best.pt` (chosen on validation) and `last.pt` live in the run's folder; evaluation
loads the `model` entry with `weights_only=True`. A PEFT run on a base from a weights
file keeps only its trainable tensors there, plus a `base` entry naming the file and its
sha256 (`models.saved`). The resume checkpoint (`save_resume`) holds everything else a
run needs to continue exactly: every entry is a tensor, a number, a string or a dict or
list of them, so it loads with `weights_only=True` too.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from caat_app.errors import CaatError
from caat_app.method.optim import FlatOptimizer
from caat_app.models.saved import base_entry, model_state
from caat_app.training.resume_point import (
    ResumePoint,
    atomic_write,
    read_resume_point,
    write_resume_point,
)


def _save(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def save_checkpoint(
    run_dir: Path | None,
    name: str,
    *,
    model: nn.Module,
    optimizer: FlatOptimizer,
    epoch: int,
    step: int,
) -> None:
    """Write `<run_dir>/<name>.pt` atomically (`atomic_write`); no folder: no-op.

    An evaluation started mid-run loads the previous checkpoint or this one, never a
    torn write, and a failed write leaves no temporary file behind.
    """
    if run_dir is None:
        return
    state: dict[str, Any] = {
        "model": model_state(model),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
    }
    base = base_entry(model)
    if base is not None:
        state["base"] = base
    _save(run_dir / f"{name}.pt", state)


def save_resume(run_dir: Path, state: dict[str, Any], point: ResumePoint) -> None:
    """Write the resume state, then commit `point` naming it (`resume_point`)."""
    _save(run_dir / point.file, state)
    write_resume_point(run_dir, point)


def load_resume(run_dir: Path | None, step: int) -> dict[str, Any]:
    """The resume state the store expects: taken after `step` steps, or a CaatError."""
    point = read_resume_point(run_dir)
    if run_dir is None or point is None:
        raise CaatError(f"no checkpoint to resume from in {run_dir}")
    if point.step != step:
        raise CaatError(
            f"the checkpoint in {run_dir} is at step {point.step}, the store expects {step}; "
            "resume the run again"
        )
    try:
        state = torch.load(run_dir / point.file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: say which, in one line
        raise CaatError(f"cannot read {run_dir / point.file}: {exc}") from None
    if not isinstance(state, dict) or state.get("step") != step:
        raise CaatError(f"{run_dir / point.file} is not a resume checkpoint of step {step}")
    return state


def rng_state(device: torch.device, augment: torch.Generator) -> dict[str, torch.Tensor]:
    """The random states training draws from besides the batch order: torch's global
    generator (attacks' random starts, dropout), CUDA's when training there, and the
    augmentation's."""
    state = {"cpu": torch.get_rng_state(), "augment": augment.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(
    state: dict[str, torch.Tensor], device: torch.device, augment: torch.Generator
) -> None:
    """Put back what `rng_state` took. A generator of another kind of device (a run
    resumed on another machine) cannot be: the run then continues, but not bit for bit."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    with contextlib.suppress(RuntimeError):  # a CPU generator's state on CUDA, or the reverse
        augment.set_state(state["augment"])
