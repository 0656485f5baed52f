"""One trainer for Vanilla AT and CA-AT.

One tight loop in the airbench spirit: the data set lives on the device, batches are
index gathers, augmentation is batched on the device, and step metrics are accumulated
in a device buffer that is copied to the host every `log_every` steps (or half a
second), the only host synchronisation of the loop. The trainer reports through a
`Sink`: the worker plugs the store in, tests plug in a list.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from caat_app.attacks.pgd import pgd
from caat_app.attacks.registry import run_attack
from caat_app.config import RunConfig
from caat_app.data.augment import augment
from caat_app.data.registry import AUGMENT
from caat_app.data.splits import DataSplits, load_dataset
from caat_app.method.conflict import Mixer
from caat_app.method.losses import adversarial_loss, attack_objective, clean_loss
from caat_app.method.optim import FlatParams, FlatSGD
from caat_app.models.build import build_for_run
from caat_app.training.device import autocast, resolve_device

STEP_FIELDS = (
    "loss_c",
    "loss_a",
    "acc_c",
    "acc_a",
    "phi",
    "mu",
    "norm_c",
    "norm_a",
    "coef_c",
    "projected",
    "skipped",
)
_COPY_SECONDS = 0.5


class Sink(Protocol):
    """Where the trainer reports; every method is called from the training thread.

    `should_stop` is asked after every step and before every evaluation batch, so a
    sink can also keep a heartbeat there.
    """

    def steps(self, rows: list[dict[str, Any]]) -> None: ...

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool: ...


@dataclass
class ListSink:
    """Keeps everything in memory: for tests and benchmarks."""

    step_rows: list[dict[str, Any]] = field(default_factory=list)
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    stop_after_steps: int | None = None

    def steps(self, rows: list[dict[str, Any]]) -> None:
        self.step_rows.extend(rows)

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None:
        self.epoch_rows.append(row)
        self.summary = summary

    def should_stop(self) -> bool:
        return self.stop_after_steps is not None and len(self.step_rows) >= self.stop_after_steps


@dataclass
class TrainResult:
    status: str  # finished | cancelled | diverged
    epochs_done: int
    steps_done: int
    nonfinite_steps: int
    summary: dict[str, Any]


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
        self.nonfinite = 0
        self.epoch_steps = 0

    def start_epoch(self) -> None:
        self.epoch_sum.zero_()
        self.epoch_steps = 0

    def record(self, metrics: Tensor, step: int, epoch: int, lr: float) -> bool:
        """Keep one step's metrics; True when this call copied a block out."""
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
        means = (self.epoch_sum / max(self.epoch_steps, 1)).tolist()
        return dict(zip(STEP_FIELDS, means, strict=True))


def one_cycle(step: int, total: int, peak: float) -> float:
    """Linear warm-up to `peak` over the first 40% of the steps, then down to 0."""
    t = (step + 0.5) / max(total, 1)
    return peak * (t / 0.4 if t < 0.4 else max(0.0, (1.0 - t) / 0.6))


def _eval_subset(x: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The first `n` of a fixed permutation: the same images every epoch and every run."""
    if n <= 0 or n >= len(y):
        return x, y
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n]
    order = order.to(x.device)
    return x[order], y[order]


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[float, float] | None:
    """Clean and PGD accuracy, counted on the device and read once at the end.

    `should_stop` is asked before every batch (an evaluation of CIFAR's test set takes
    minutes); None means it said yes.
    """
    was_training = model.training
    model.eval()
    correct = torch.zeros(2, dtype=torch.long, device=x.device)
    try:
        for start in range(0, len(y), batch_size):
            if should_stop():
                return None
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            with autocast():
                with torch.no_grad():
                    correct[0] += (model(xb).argmax(1) == yb).sum()
                x_adv = pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, norm=norm)
                with torch.no_grad():
                    correct[1] += (model(x_adv).argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    clean, adv = (correct.double() / max(len(y), 1)).tolist()
    return clean, adv


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Shuffled index batches; the last partial batch is dropped (BatchNorm needs > 1)."""
    order = torch.randperm(n, generator=generator)
    size = min(batch_size, n)
    for start in range(0, n - size + 1, size):
        yield order[start : start + size]


class Trainer:
    """Holds a run's model, buffers and state; `run()` trains it to the end."""

    def __init__(
        self,
        config: RunConfig,
        sink: Sink,
        *,
        run_dir: Path | None = None,
        data: DataSplits | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.run_dir = run_dir
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        if data is None:
            root = Path(config.data_dir) if config.data_dir else None
            data = load_dataset(config.dataset, root=root, download=config.download)
        self.data = data
        self.model = build_for_run(config, data, self.device)
        self.flat = FlatParams(self.model)
        self.opt = FlatSGD(
            self.flat.flat, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.mixer = Mixer(
            config.method,
            config.param,
            sizes=self.flat.sizes,
            projection=config.projection,
            device=self.device,
        )
        self.direction = torch.empty_like(self.flat.flat)
        dev = self.device
        self.x_train, self.y_train = data.x_train.to(dev), data.y_train.to(dev)
        self.x_val, self.y_val = _eval_subset(data.x_val.to(dev), data.y_val.to(dev), config.eval_n)
        self.x_test, self.y_test = _eval_subset(
            data.x_test.to(dev), data.y_test.to(dev), config.eval_n
        )
        aug = AUGMENT.get(data.name)
        use_aug = config.augment if config.augment is not None else aug is not None
        fallback = {"flip": False, "translate": 1, "rotate_deg": 10.0}
        self.augment = (aug or fallback) if use_aug else None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.aug_generator = torch.Generator(device=dev).manual_seed(config.seed)
        self.beta = config.loss_beta
        self.retain = config.loss != "ce"
        batch = min(config.batch_size, len(self.y_train))
        self.steps_per_epoch = max(1, len(self.y_train) // batch)
        self.total_steps = self.steps_per_epoch * config.epochs
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.device, self.config.bf16)

    def train_step(self, xb: Tensor, yb: Tensor, lr: float) -> Tensor:
        """One CA-AT / Vanilla-AT step; returns the step's metrics as one device vector."""
        cfg, model, flat = self.config, self.model, self.flat
        with self.autocast():
            objective = None
            if cfg.loss == "trades":
                was = model.training
                model.eval()
                with torch.no_grad():
                    objective = attack_objective(cfg.loss, model(xb))
                model.train(was)
            x_adv = run_attack(
                cfg.attack,
                model,
                xb,
                yb,
                eps=cfg.eps,
                alpha=cfg.step_size,
                steps=cfg.attack_steps,
                norm=cfg.norm,
                loss_fn=objective,
            )
            flat.zero_grads()
            logits_c = model(xb)
            loss_c = clean_loss(logits_c, yb)
        flat.grad_into(0)
        loss_c.backward(retain_graph=self.retain)
        with self.autocast():
            logits_a = model(x_adv)
            loss_a = adversarial_loss(cfg.loss, logits_c, logits_a, yb, beta=self.beta)
        flat.grad_into(1)
        loss_a.backward()
        mix = self.mixer(flat.grads, self.direction)
        self.opt.step(self.direction, lr, mix.ok)
        c = mix.conflict
        return torch.stack(
            (
                loss_c.detach().float(),
                loss_a.detach().float(),
                (logits_c.argmax(1) == yb).float().mean(),
                (logits_a.argmax(1) == yb).float().mean(),
                c.phi,
                c.mu,
                c.norm_c,
                c.norm_a,
                mix.coef_c,
                mix.fired,
                (~mix.ok).float(),
            )
        )

    def checkpoint(self, name: str, epoch: int, step: int) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "epoch": epoch,
            "step": step,
        }
        tmp = self.run_dir / f".{name}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.run_dir / f"{name}.pt")

    def run(self) -> TrainResult:
        cfg, sink = self.config, self.sink
        recorder = StepRecorder(sink, cfg.log_every, self.device)
        step = 0
        status = "finished"
        best: dict[str, Any] = {}
        last: dict[str, Any] = {}
        epochs_done = 0
        batch = min(cfg.batch_size, len(self.y_train))
        self.model.train()
        for epoch in range(1, cfg.epochs + 1):
            epoch_start = time.perf_counter()
            recorder.start_epoch()
            lr = 0.0
            for idx in _batches(len(self.y_train), cfg.batch_size, self.generator):
                idx = idx.to(self.device, non_blocking=True)
                xb, yb = self.x_train[idx], self.y_train[idx]
                if self.augment is not None:
                    xb = augment(xb, generator=self.aug_generator, **self.augment)
                lr = one_cycle(step, self.total_steps, cfg.lr)
                copied = recorder.record(self.train_step(xb, yb, lr), step, epoch, lr)
                step += 1
                if copied and recorder.nonfinite > cfg.max_nonfinite:
                    status = "diverged"
                    break
                if sink.should_stop():
                    status = "cancelled"
                    break
            recorder.copy_out()
            if status == "finished" and recorder.nonfinite > cfg.max_nonfinite:
                status = "diverged"
            if status != "finished":
                self.checkpoint("last", epoch, step)
                break
            train_seconds = time.perf_counter() - epoch_start
            means = recorder.epoch_means()
            evals = self.evaluate()
            if evals is None:
                status = "cancelled"
                self.checkpoint("last", epoch, step)
                break
            row = {
                "epoch": epoch,
                "train_loss_c": means["loss_c"],
                "train_loss_a": means["loss_a"],
                "train_clean": means["acc_c"],
                "train_adv": means["acc_a"],
                **evals,
                "images_per_sec": recorder.epoch_steps * batch / train_seconds,
                "epoch_seconds": time.perf_counter() - epoch_start,
                "elapsed": time.perf_counter() - recorder.start,
                "lr": lr,
            }
            epochs_done = epoch
            last = {f"last_{k}": v for k, v in evals.items()}
            if not best or (evals["val_adv"], evals["val_clean"]) > (
                best["best_val_adv"],
                best["best_val_clean"],
            ):
                best = {"best_epoch": epoch, **{f"best_{k}": v for k, v in evals.items()}}
                self.checkpoint("best", epoch, step)
            self.checkpoint("last", epoch, step)
            sink.epoch(row, {**best, **last, "epochs_done": epoch, "steps_done": step})
            if sink.should_stop():
                status = "cancelled"
                break
        summary = {
            **best,
            **last,
            "epochs_done": epochs_done,
            "steps_done": step,
            "nonfinite_steps": recorder.nonfinite,
        }
        return TrainResult(status, epochs_done, step, recorder.nonfinite, summary)

    def evaluate(self) -> dict[str, float] | None:
        """Clean and PGD accuracy on validation and test; None when stopped midway."""
        cfg = self.config
        kwargs: dict[str, Any] = {
            "eps": cfg.eps,
            "alpha": cfg.step_size,
            "steps": cfg.eval_steps,
            "norm": cfg.norm,
            "batch_size": max(cfg.batch_size, 256),
            "autocast": self.autocast,
            "should_stop": self.sink.should_stop,
        }
        results: dict[str, float] = {}
        for split, x, y in (("val", self.x_val, self.y_val), ("test", self.x_test, self.y_test)):
            accuracies = evaluate(self.model, x, y, **kwargs)
            if accuracies is None:
                return None
            results[f"{split}_clean"], results[f"{split}_adv"] = accuracies
        return results


def train(
    config: RunConfig,
    sink: Sink,
    *,
    run_dir: Path | None = None,
    data: DataSplits | None = None,
) -> TrainResult:
    """Train one run to its end (finished, cancelled or diverged)."""
    return Trainer(config, sink, run_dir=run_dir, data=data).run()
