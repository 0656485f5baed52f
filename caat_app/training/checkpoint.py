"""Checkpoints: the model and optimiser state, written so a reader never sees half a file.

`best.pt` (chosen on validation) and `last.pt` live in the run's folder; evaluation
loads the `model` entry with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from caat_app.method.optim import FlatSGD


def save_checkpoint(
    run_dir: Path | None,
    name: str,
    *,
    model: nn.Module,
    optimizer: FlatSGD,
    epoch: int,
    step: int,
) -> None:
    """Write `<run_dir>/<name>.pt` through a temporary file and a rename; no folder: no-op.

    The rename is atomic, so an evaluation started mid-run loads the previous
    checkpoint or this one, never a torn write.
    """
    if run_dir is None:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
    }
    tmp = run_dir / f".{name}.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(run_dir / f"{name}.pt")
