"""What a resume checkpoint holds, and putting it back: a resumed run ends with the same
numbers as one never interrupted (bit for bit on the CPU).

Besides the weights and the optimiser's momentum, a run's numbers depend on where it
is (epoch, step, batches of the epoch done), the batch-order generator's state at the
epoch's start (the same permutation is drawn again and the done batches skipped), the
augmentation's and torch's own generators (the attacks' random starts), the best and
last epoch so far, and the recorder's per-epoch sums and non-finite count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from caat_app.errors import CaatError
from caat_app.models.saved import base_entry, load_model_state, model_state
from caat_app.training.checkpoint import rng_state, set_rng_state

if TYPE_CHECKING:
    from caat_app.training.steps import StepRecorder
    from caat_app.training.trainer import Trainer

VERSION = 1


@dataclass
class Place:
    """Where training is: what a checkpoint taken now must say to continue from here."""

    epoch: int = 1  # the epoch in progress, or the next one between epochs
    done: int = 0  # its batches trained
    order: Tensor | None = None  # the batch-order generator's state at its start (None: now)
    lr: float = 0.0  # the last step's rate: the epoch row's `lr`
    seconds: float = 0.0  # the epoch's training time before a resume
    # The random states here when they have moved on since (the epoch's measurement
    # draws random starts: stopped during it, the run resumes from before it).
    rng: dict[str, Tensor] | None = None


def capture(trainer: Trainer, recorder: StepRecorder) -> dict[str, Any]:
    """The trainer's whole state at its `place`, for `torch.save` (weights_only-loadable)."""
    place, now = trainer.place, time.perf_counter()
    mid_epoch = place.done > 0
    order = place.order if mid_epoch and place.order is not None else None
    return {
        "version": VERSION,
        "model": model_state(trainer.model),  # a PEFT run's: its trainable part
        "base": base_entry(trainer.model),
        "optimizer": trainer.opt.state_dict(),
        "step": trainer.step,
        "steps_per_epoch": trainer.steps_per_epoch,
        "epoch": place.epoch,
        "done": place.done,
        "lr": place.lr,
        "epoch_seconds": now - trainer.epoch_start if mid_epoch else 0.0,
        "order": order if order is not None else trainer.generator.get_state(),
        "rng": place.rng or rng_state(trainer.device, trainer.aug_generator),
        "standing": {"best": dict(trainer.standing.best), "last": dict(trainer.standing.last)},
        "recorder": {
            "epoch_sum": recorder.epoch_sum.detach().cpu(),
            "epoch_steps": recorder.epoch_steps,
            "nonfinite": recorder.nonfinite,
            "elapsed": now - recorder.start,
        },
    }


def restore(trainer: Trainer, state: dict[str, Any], recorder: StepRecorder) -> None:
    """Put `capture`'s state back into a freshly built trainer and its recorder."""
    if state.get("version") != VERSION:
        raise CaatError(
            f"a resume checkpoint of version {state.get('version')}; expected {VERSION}"
        )
    if state["steps_per_epoch"] != trainer.steps_per_epoch:
        raise CaatError(
            f"the checkpoint has {state['steps_per_epoch']} steps per epoch, this run "
            f"{trainer.steps_per_epoch}: its data or batch size changed"
        )
    where = f"the resume checkpoint in {trainer.run_dir}"
    load_model_state(trainer.model, state["model"], state.get("base"), where)
    trainer.opt.load_state_dict(state["optimizer"])
    trainer.step = int(state["step"])
    trainer.place = Place(
        epoch=int(state["epoch"]),
        done=int(state["done"]),
        lr=float(state["lr"]),
        seconds=float(state["epoch_seconds"]),
    )
    trainer.standing.best = dict(state["standing"]["best"])
    trainer.standing.last = dict(state["standing"]["last"])
    kept = state["recorder"]
    recorder.epoch_sum.copy_(kept["epoch_sum"])
    recorder.epoch_steps = int(kept["epoch_steps"])
    recorder.nonfinite = int(kept["nonfinite"])
    recorder.start = time.perf_counter() - float(kept["elapsed"])
    trainer.generator.set_state(state["order"])
    set_rng_state(state["rng"], trainer.device, trainer.aug_generator)
