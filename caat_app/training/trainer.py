"""One trainer for Vanilla AT and CA-AT, to be read top-down.

In the airbench spirit: the data set lives on the device, an epoch is a stream of
batches gathered and augmented there, and each step's metrics stay in a device buffer
that is copied to the host every `log_every` steps (or half a second), the loop's only
host synchronisation. `run` loops over epochs; `train_epoch` trains through one epoch's batch
stream and measures; `train_step` is one CA-AT / Vanilla-AT step, `finish_step` records
it (and, every `layer_stats` steps, its per-layer conflict). The trainer reports
through a `Sink`: the worker plugs the store in, tests plug in a list.

Around it: `steps` (what a step records), `sinks`, `measure` (per-epoch accuracy),
`checkpoint`, `resume` (what a resume checkpoint holds) and `schedule`.

Checkpoints: `best` and `last` at every epoch's end; the resume checkpoint after every
epoch's row, every `checkpoint_every` minutes inside an epoch, and when the run is
stopped, so a run whose worker died or was cancelled continues where it was
(`Trainer(resume_step=...)`) and ends with the numbers it would have had.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from caat_app.config import RunConfig
from caat_app.data.augment import augment
from caat_app.data.registry import AUGMENT
from caat_app.data.splits import DataSplits, load_for_run
from caat_app.errors import ConfigError
from caat_app.method.conflict import Mixer, segment_conflict
from caat_app.method.losses import adversarial_loss, clean_loss
from caat_app.method.optim import FlatParams, make_optimizer
from caat_app.models.build import build_for_run
from caat_app.models.registry import MODELS
from caat_app.training import distributed
from caat_app.training.adversary import training_examples
from caat_app.training.checkpoint import load_resume, rng_state, save_checkpoint, save_resume
from caat_app.training.device import TrainError, autocast, memory_format, resolve_device
from caat_app.training.measure import fixed_subset, measure_splits
from caat_app.training.resume import Place, capture, restore
from caat_app.training.resume_point import ResumePoint, state_name
from caat_app.training.schedule import rate
from caat_app.training.sinks import NullSink, Sink
from caat_app.training.steps import LayerRecorder, StepMetrics, StepRecorder
from caat_storage import RunStatus

# Augmentation for a data set the registry has none for, when the config asks for one.
_FALLBACK_AUGMENT = {"flip": False, "translate": 1, "rotate_deg": 10.0}
# What `Trainer.measure` puts into each epoch row, in its order.
MEASURED = ("val_clean", "val_adv", "test_clean", "test_adv")
# The run's summary fields `Standing` fills: a resume point names each, None if not yet.
STANDING_FIELDS = ("best_epoch", *(f"{w}_{k}" for w in ("best", "last") for k in MEASURED))


def kept(x: Tensor, y: Tensor, drop: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """The training split without the images `drop` names (indices into the split)."""
    if not drop:
        return x, y
    if max(drop) >= len(y):
        raise ConfigError(f"drop: index {max(drop)} is past the training split ({len(y)} images)")
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[list(drop)] = False
    return x[keep], y[keep]


class StopReason(StrEnum):
    """Why training ended: each is the run status the worker stores for it (and equal to it)."""

    FINISHED = RunStatus.FINISHED.value
    CANCELLED = RunStatus.CANCELLED.value
    DIVERGED = RunStatus.DIVERGED.value


@dataclass
class TrainResult:
    """How a run ended; `summary` holds the fields the worker stores on the run."""

    status: StopReason  # why it stopped; equal to the run status string
    epochs_done: int
    steps_done: int
    nonfinite_steps: int
    summary: dict[str, Any]


@dataclass
class Standing:
    """The best epoch so far and the last one, as the run's summary fields name them.

    Best is chosen on validation (robust accuracy first, then clean), never on test.
    """

    best: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> bool:
        """Take an epoch's row; True when it is the new best."""
        accuracies = {k: row[k] for k in MEASURED}
        self.last = {f"last_{k}": v for k, v in accuracies.items()}
        key = (accuracies["val_adv"], accuracies["val_clean"])
        if self.best and not key > (self.best["best_val_adv"], self.best["best_val_clean"]):
            return False
        self.best = {"best_epoch": row["epoch"], **{f"best_{k}": v for k, v in accuracies.items()}}
        return True

    def summary(self) -> dict[str, Any]:
        return {**self.best, **self.last}


class Trainer:
    """Holds a run's model, buffers and state; `run()` trains it to the end.

    `resume_step`: continue from the run folder's resume checkpoint, which must have
    been taken after that many steps (the store's count). `flush` makes what the sink
    was handed durable; it is called before every resume checkpoint, so a checkpoint
    never runs ahead of the stored rows.
    """

    def __init__(
        self,
        config: RunConfig,
        sink: Sink,
        *,
        run_dir: Path | None = None,
        data: DataSplits | None = None,
        resume_step: int | None = None,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.ranks = distributed.current()  # rank 0 of 1 unless `--gpus N` or torchrun
        self.sink = sink if self.ranks.lead else NullSink()
        self.run_dir = run_dir
        self.resume_step, self.flush = resume_step, flush
        self.device = dev = distributed.rank_device(resolve_device(config.device), self.ranks)
        torch.manual_seed(config.seed)  # before the model is built: same seed, same weights
        if data is None:
            data = load_for_run(config)
        self.data = data
        self.layout = memory_format(dev, MODELS[config.model].transformer)
        self.model = build_for_run(config, data, dev).to(memory_format=self.layout)
        self.flat = FlatParams(self.model)  # keeps the layout
        # What the steps and the per-epoch check call: compiled on request (`--compile`).
        self.net: nn.Module = torch.compile(self.model) if config.compile else self.model
        # The parameter tensors' names in flat-buffer order: the layers of `layer_stats`.
        self.layer_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.opt = make_optimizer(
            config.optimizer,
            self.flat.flat,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov,
        )
        self.mixer = Mixer(
            config.method,
            config.param,
            sizes=self.flat.sizes,
            projection=config.projection,
            device=dev,
        )
        self.direction = torch.empty_like(self.flat.flat)
        if self.ranks.split:  # each rank its own attack noise; weights were drawn alike
            torch.manual_seed(config.seed + self.ranks.rank)
        self.put_data_on_device(data)
        aug = AUGMENT.get(data.name)
        use_aug = config.augment if config.augment is not None else aug is not None
        self.augment = (aug or _FALLBACK_AUGMENT) if use_aug else None
        self.generator = torch.Generator().manual_seed(config.seed)  # the batch order
        self.aug_generator = torch.Generator(device=dev).manual_seed(config.seed)
        self.batch = min(config.batch_size, len(self.y_train))
        self.steps_per_epoch = max(1, len(self.y_train) // self.batch)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.step = 0  # steps taken so far, over all epochs
        self.place = Place()  # where in the run: what a resume checkpoint says
        self.standing = Standing()
        self.epoch_start = self.last_checkpoint = time.perf_counter()
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def put_data_on_device(self, data: DataSplits) -> None:
        """The training split (less `drop`) and the per-epoch check's fixed subsets."""
        dev, cfg = self.device, self.config
        x_train, y_train = kept(data.x_train, data.y_train, cfg.drop)
        self.x_train, self.y_train = x_train.to(dev), y_train.to(dev)
        self.x_val, self.y_val = fixed_subset(data.x_val.to(dev), data.y_val.to(dev), cfg.eval_n)
        self.x_test, self.y_test = fixed_subset(
            data.x_test.to(dev), data.y_test.to(dev), cfg.eval_n
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.device, self.config.bf16)

    def recorder(self) -> StepRecorder:
        """The run's step recorder, with a layer recorder when `layer_stats` asks for one."""
        every = self.config.layer_stats
        layers = (
            LayerRecorder(self.sink, self.layer_names, self.flat.sizes, every) if every else None
        )
        return StepRecorder(
            self.sink, self.config.log_every, self.device, layers, timed=not self.ranks.split
        )

    def run(self) -> TrainResult:
        """Train epoch by epoch until the last one, a stop request or divergence.

        A stopped run leaves a resume checkpoint of where it stopped; so does every
        epoch, after its row went to the sink.
        """
        recorder = self.recorder()
        if self.resume_step is not None:
            restore(self, load_resume(self.run_dir, self.resume_step), recorder)
        stop = StopReason.FINISHED
        self.model.train()
        for epoch in range(self.place.epoch, self.config.epochs + 1):
            stop, row = self.train_epoch(epoch, recorder)
            if row is None:
                self.save("last", epoch)
                if stop is StopReason.CANCELLED:
                    self.save_resume(recorder)
                break
            if self.standing.add(row):
                self.save("best", epoch)
            self.save("last", epoch)
            self.sink.epoch(row, self.summary(recorder, epoch))
            self.place = Place(epoch + 1, lr=self.place.lr)
            self.save_resume(recorder)
            if self.ranks.agree(self.sink.should_stop(), self.device):
                stop = StopReason.CANCELLED
                break
        done = self.place.epoch - 1
        return TrainResult(stop, done, self.step, recorder.nonfinite, self.summary(recorder, done))

    def summary(self, recorder: StepRecorder, epochs_done: int) -> dict[str, Any]:
        """The run's summary fields after `epochs_done` complete epochs."""
        return {
            **self.standing.summary(),
            "epochs_done": epochs_done,
            "steps_done": self.step,
            "nonfinite_steps": recorder.nonfinite,
        }

    def train_epoch(
        self, epoch: int, recorder: StepRecorder
    ) -> tuple[StopReason, dict[str, Any] | None]:
        """Train through one epoch's batch stream, then measure: the epoch's stored row.

        No row when the epoch ended early: a stop request (also asked during the
        measurement) or more non-finite steps than `max_nonfinite`.
        """
        cfg, place = self.config, self.place
        start = self.epoch_start = time.perf_counter() - place.seconds
        if not place.done:  # a resumed epoch keeps the sums its checkpoint held
            recorder.start_epoch()
        stop = StopReason.FINISHED
        for xb, yb in self.batches(place.done):
            lr, momentum = rate(cfg.schedule, self.step, self.steps_per_epoch, cfg.epochs, cfg.lr)
            self.finish_step(recorder, self.train_step(xb, yb, lr, momentum), epoch, lr)
            place.done, place.lr = place.done + 1, lr
            if recorder.nonfinite > cfg.max_nonfinite:  # counted as blocks are copied out
                stop = StopReason.DIVERGED
                break
            if self.stop_asked():
                stop = StopReason.CANCELLED
                break
            if self.checkpoint_due():
                self.save_resume(recorder)
        recorder.copy_out()
        if stop is StopReason.FINISHED and recorder.nonfinite > cfg.max_nonfinite:
            stop = StopReason.DIVERGED
        if stop is not StopReason.FINISHED:
            return stop, None
        train_seconds = time.perf_counter() - start
        means = recorder.epoch_means()
        place.rng = rng_state(self.device, self.aug_generator)  # stopped in `measure`: from here
        accuracies = self.measure()
        if accuracies is None:
            return StopReason.CANCELLED, None
        return stop, {
            "epoch": epoch,
            "train_loss_c": means["loss_c"],
            "train_loss_a": means["loss_a"],
            "train_clean": means["acc_c"],
            "train_adv": means["acc_a"],
            **accuracies,
            "images_per_sec": recorder.epoch_steps * self.batch / train_seconds,
            "epoch_seconds": time.perf_counter() - start,
            "elapsed": time.perf_counter() - recorder.start,
            "lr": place.lr,
        }

    def batches(self, skip: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of shuffled training batches, gathered and augmented on the device.

        The last partial batch is dropped (BatchNorm needs more than one image). `skip`:
        the epoch's first batches, trained before a resume, are left out (and not
        augmented: the augmentation's generator was saved past them).
        """
        n = len(self.y_train)
        self.place.order = self.generator.get_state()
        order = torch.randperm(n, generator=self.generator)
        for start in range(skip * self.batch, n - self.batch + 1, self.batch):
            idx = order[start : start + self.batch].to(self.device, non_blocking=True)
            xb, yb = self.x_train[idx], self.y_train[idx]
            if self.augment is not None:
                xb = augment(xb, generator=self.aug_generator, **self.augment)
            yield xb.contiguous(memory_format=self.layout), yb

    def train_step(
        self, xb: Tensor, yb: Tensor, lr: float, momentum: float | None = None
    ) -> Tensor:
        """One CA-AT / Vanilla-AT step; returns its stacked `StepMetrics` (on the device)."""
        cfg, model, flat = self.config, self.net, self.flat
        xb, yb = self.ranks.shard(xb, yb)
        with self.autocast():
            x_adv = training_examples(model, cfg, xb, yb)
            flat.zero_grads()
            logits_c = model(xb)
            loss_c = clean_loss(logits_c, yb)
        flat.grad_into(0)
        loss_c.backward(retain_graph=cfg.loss != "ce")  # TRADES and CLP reuse logits_c
        with self.autocast():
            logits_a = model(x_adv)
            loss_a = adversarial_loss(cfg.loss, logits_c, logits_a, yb, beta=cfg.loss_beta)
        flat.grad_into(1)
        loss_a.backward()
        self.ranks.average(flat.grads)  # the global batch's g_c and g_a, before the projection
        mix = self.mixer(flat.grads, self.direction)
        self.opt.step(self.direction, lr, mix.ok, momentum)
        metrics = StepMetrics(
            loss_c=loss_c.detach().float(),
            loss_a=loss_a.detach().float(),
            acc_c=(logits_c.argmax(1) == yb).float().mean(),
            acc_a=(logits_a.argmax(1) == yb).float().mean(),
            phi=mix.conflict.phi,
            mu=mix.conflict.mu,
            norm_c=mix.conflict.norm_c,
            norm_a=mix.conflict.norm_a,
            coef_c=mix.coef_c,
            projected=mix.fired,
            skipped=(~mix.ok).float(),
        ).stack()
        return self.ranks.average(metrics)

    def finish_step(self, recorder: StepRecorder, metrics: Tensor, epoch: int, lr: float) -> None:
        """Record the step just taken (its layers first, when due) and count it.

        The layers are kept before the step, so a block the step's record copies out
        carries them too; both stay on the device until then.
        """
        layers = recorder.layers
        if layers is not None and layers.due(self.step):
            layers.record(self.layer_conflict(), self.step, epoch)
        recorder.record(metrics, self.step, epoch, lr)
        self.step += 1

    def layer_conflict(self) -> Tensor:
        """φ, μ, ‖g_c‖, ‖g_a‖ of each parameter tensor for the last step: (4, L), on the device."""
        return torch.stack(segment_conflict(self.flat.grads, self.flat.sizes))

    def stop_asked(self) -> bool:
        """The sink's stop request; ranks agree on it every `log_every` steps."""
        if not self.ranks.split:
            return self.sink.should_stop()
        if self.step % self.config.log_every:
            return False
        return self.ranks.agree(self.sink.should_stop(), self.device)

    def measure(self) -> dict[str, float] | None:
        """Clean and PGD accuracy on validation and test; None when stopped midway.

        In a distributed run rank 0 measures (and is not stopped midway: the ranks agree
        on stopping after the epoch); the others report NaN, which nothing stores."""
        cfg = self.config
        if not self.ranks.lead:
            return dict.fromkeys(MEASURED, float("nan"))
        should_stop = (lambda: False) if self.ranks.split else self.sink.should_stop
        return measure_splits(
            self.net,
            {"val": (self.x_val, self.y_val), "test": (self.x_test, self.y_test)},
            eps=cfg.eps,
            alpha=cfg.step_size,
            steps=cfg.eval_steps,
            norm=cfg.norm,
            batch_size=max(cfg.batch_size, 256),
            should_stop=should_stop,
        )

    def save(self, name: str, epoch: int) -> None:
        """Checkpoint `name` (best, last) at this epoch and step; no run folder: nothing."""
        if not self.ranks.lead:
            return
        save_checkpoint(
            self.run_dir, name, model=self.model, optimizer=self.opt, epoch=epoch, step=self.step
        )

    def checkpoint_due(self) -> bool:
        """Whether `checkpoint_every` minutes have passed since the last resume checkpoint."""
        every = self.config.checkpoint_every
        if self.ranks.split:  # rank 0 alone keeps time: ranks checkpoint on epochs and stops
            return False
        return every > 0 and time.perf_counter() - self.last_checkpoint >= 60.0 * every

    def save_resume(self, recorder: StepRecorder) -> None:
        """The resume checkpoint of this place, after its rows reached the sink (and, with
        `flush`, the store); no run folder: nothing."""
        self.last_checkpoint = time.perf_counter()
        if self.run_dir is None or not self.ranks.lead:
            return
        recorder.copy_out()
        if self.flush is not None:
            self.flush()
        epochs_done = self.place.epoch - 1
        fields = {**dict.fromkeys(STANDING_FIELDS), **self.summary(recorder, epochs_done)}
        point = ResumePoint(state_name(self.step), self.step, epochs_done, fields)
        save_resume(self.run_dir, capture(self, recorder), point)


def train(
    config: RunConfig,
    sink: Sink,
    *,
    run_dir: Path | None = None,
    data: DataSplits | None = None,
    resume_step: int | None = None,
    flush: Callable[[], None] | None = None,
) -> TrainResult:
    """Train one run to its end (finished, cancelled or diverged); see `Trainer`.

    With `gpus` > 1 (and no process group yet, as under torchrun) this process is rank 0
    and spawns the other ranks, which follow with the same config, data and checkpoint.
    """
    world = 1 if distributed.current().split else config.gpus
    device_type = resolve_device(config.device).type
    if world > 1 and device_type == "cuda" and torch.cuda.device_count() < world:
        raise TrainError(f"gpus {world}: this machine has {torch.cuda.device_count()} CUDA devices")
    data = data if data is not None or world == 1 else load_for_run(config)
    follow = functools.partial(
        follow_run, config.model_dump(mode="json"), run_dir, data, resume_step
    )
    with distributed.spawned(world, device_type, follow):
        trainer = Trainer(
            config, sink, run_dir=run_dir, data=data, resume_step=resume_step, flush=flush
        )
        return trainer.run()


def follow_run(
    config: dict[str, Any], run_dir: Path | None, data: DataSplits | None, resume_step: int | None
) -> None:
    """A rank other than 0: the same run, reporting nowhere and writing nothing."""
    from caat_app.config import config_from_json

    Trainer(
        config_from_json(config), NullSink(), run_dir=run_dir, data=data, resume_step=resume_step
    ).run()
