"""`caat bench`: what a training step and an evaluation cost, measured rather than asserted.

Clean training, Vanilla AT and CA-AT are timed on the same model, batch and attack,
in interleaved repeats (so drift on a shared machine hits all three alike), and the
median per-step time of each is reported. The logging line times exactly what the
trainer does per step to record metrics (`StepRecorder`), feeding the real store
sink and batched writer over a temporary SQLite store.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from caat_app.config import build_config
from caat_app.data.splits import load_dataset
from caat_app.method.losses import clean_loss
from caat_app.runs.worker import StopFlag, StoreSink
from caat_app.training.trainer import StepRecorder, Trainer
from caat_storage import BatchWriter, RunStatus, Store


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clean_step(trainer: Trainer, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> None:
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
    _sync(device)
    start = time.perf_counter()
    for xb, yb in batches:
        fn(xb, yb, 0.01)
    _sync(device)
    return (time.perf_counter() - start) / len(batches)


def run_bench(
    *,
    model: str = "cnn",
    batch_size: int = 128,
    attack_steps: int = 10,
    steps: int = 30,
    repeats: int = 5,
    device: str = "auto",
) -> dict[str, Any]:
    """Time the three kinds of step; returns a JSON-able report."""
    data = load_dataset("digits")
    common = {
        "model": model,
        "batch_size": batch_size,
        "attack_steps": attack_steps,
        "device": device,
        "epochs": 1,
    }
    vanilla = Trainer(build_config({**common, "method": "vanilla"}), _NullSink(), data=data)
    caat = Trainer(build_config({**common, "method": "caat"}), _NullSink(), data=data)
    dev = caat.device
    gen = torch.Generator().manual_seed(0)
    n = len(caat.y_train)
    batches = []
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen).to(dev)
        batches.append((caat.x_train[idx], caat.y_train[idx]))

    kinds = {
        "clean": lambda xb, yb, lr: _clean_step(vanilla, xb, yb, lr),
        "vanilla": vanilla.train_step,
        "caat": caat.train_step,
    }
    for fn in kinds.values():  # warm-up: allocator, cuDNN autotuning, lazy init
        _time_steps(fn, batches[:3], dev)
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):
        for kind, fn in kinds.items():
            samples[kind].append(_time_steps(fn, batches, dev))
    per_step = {k: statistics.median(v) for k, v in samples.items()}

    log_seconds, logged_steps = _time_logging(caat, batches, repeats)
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
        "repeats": repeats,
        "steps_per_repeat": steps,
    }


class _NullSink:
    def steps(self, rows: list[dict[str, Any]]) -> None:
        pass

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def _time_logging(
    trainer: Trainer, batches: list[tuple[torch.Tensor, torch.Tensor]], repeats: int
) -> tuple[float, int]:
    """Seconds spent recording metrics over real CA-AT steps into a real store."""
    dev = trainer.device
    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{Path(tmp) / 'b.db'}") as st:
        run_id = st.create_run(
            name="bench",
            config={},
            method="caat",
            param=0.8,
            dataset="digits",
            model=trainer.config.model,
            eps=0.3,
            epochs_total=1,
        )
        writer = BatchWriter(st, run_id)
        recorder = StepRecorder(StoreSink(writer, StopFlag()), trainer.config.log_every, dev)
        spent, count = 0.0, 0
        for _ in range(repeats):
            for xb, yb in batches:
                metrics = trainer.train_step(xb, yb, 0.01)
                _sync(dev)  # the GPU's queued work is the step's cost, not logging's
                start = time.perf_counter()
                recorder.record(metrics, count, 1, 0.01)
                spent += time.perf_counter() - start
                count += 1
        start = time.perf_counter()
        recorder.copy_out()
        writer.flush()
        spent += time.perf_counter() - start
    return spent, count


def eval_bench(
    *, n: int = 200, epochs: int = 10, repeats: int = 3, device: str = "auto"
) -> dict[str, Any]:
    """Images per second of evaluation attacks on the default model, trained here first.

    An untrained model is misclassified everywhere and AutoAttack would skip every point,
    so the default config (CA-AT on digits) is trained for `epochs`, then PGD-20 and the
    fast AutoAttack are timed on the first `n` stratified test images, as `caat eval` runs
    them (fixed batches, only still-robust points attacked inside AutoAttack).
    """
    from caat_app.evaluation.runner import accuracy, stratified_order

    config = build_config({"epochs": epochs, "device": device})
    data = load_dataset(config.dataset)
    trainer = Trainer(config, _NullSink(), data=data)
    trainer.run()
    model, dev = trainer.model.eval(), trainer.device
    order = stratified_order(data.y_test)[:n]
    x, y = data.x_test[order].to(dev), data.y_test[order].to(dev)
    clean = accuracy(model, x, y, None, eps=0.0, norm=config.norm)
    attacks: dict[str, dict[str, float]] = {}
    for attack, times in (("pgd", repeats), ("autoattack-fast", 1)):
        seconds, acc = [], None
        for _ in range(times):
            torch.manual_seed(0)
            _sync(dev)
            start = time.perf_counter()
            acc = accuracy(model, x, y, attack, eps=config.eps, norm=config.norm)
            _sync(dev)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        attacks[attack] = {"seconds": median, "images_per_sec": len(y) / median, "accuracy": acc}
    return {
        "model": config.model,
        "trained_epochs": epochs,
        "eps": config.eps,
        "norm": config.norm,
        "images": len(y),
        "clean": clean,
        "attacks": attacks,
    }


_STARTUP_PROBE = """
import sys
import caat_screens.runs
from caat_screens.app import CaatApp
from caat_storage import Store

show_page = caat_screens.runs.RunsScreen.on_runs_loaded


def first_page(screen, message):  # the moment a person sees the runs: stop the clock
    show_page(screen, message)
    screen.app.exit()


caat_screens.runs.RunsScreen.on_runs_loaded = first_page
with Store.open(sys.argv[1]) as store:
    CaatApp(store, gpus=[]).run(headless=True)
print("torch" in sys.modules)
"""


def dashboard_startup(*, runs: int = 1000, repeats: int = 5) -> dict[str, Any]:
    """Seconds from `python` starting to the runs table showing its first page, headless.

    A fresh interpreter each time, as a person's `caat` is, over a store of `runs` runs.
    """
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'startup.db'}"
        with Store.open(url) as store:
            config = build_config({}).model_dump(mode="json")
            for i in range(runs):  # finished runs: queued ones would be started by the dashboard
                run_id = store.create_run(
                    name=f"run-{i}",
                    config=config,
                    method="caat",
                    param=0.8,
                    dataset="digits",
                    model="cnn",
                    eps=0.3,
                    epochs_total=30,
                )
                store.finish(run_id, RunStatus.FINISHED)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", _STARTUP_PROBE, url],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            times.append(time.perf_counter() - start)
            if proc.stdout.split()[-1:] != ["False"]:
                raise RuntimeError("the dashboard imported torch")
    return {"seconds": statistics.median(times), "runs_in_store": runs, "repeats": repeats}


def print_report(console: Console, report: dict[str, Any]) -> None:
    title = (
        f"caat bench: {report['model']} on {report['dataset']}, batch "
        f"{report['batch_size']}, {report['attack']}, {report['device']}"
    )
    table = Table(title=title, title_justify="left")
    for col in ("step", "ms / step", "images / s", "× clean", "× vanilla"):
        table.add_column(col, justify="left" if col == "step" else "right")
    ms, ips = report["ms_per_step"], report["images_per_sec"]
    for kind, label in (("clean", "clean training"), ("vanilla", "Vanilla AT"), ("caat", "CA-AT")):
        table.add_row(
            label,
            f"{ms[kind]:.2f}",
            f"{ips[kind]:.0f}",
            f"{ms[kind] / ms['clean']:.2f}",
            f"{ms[kind] / ms['vanilla']:.3f}",
        )
    console.print(table)
    console.print(
        f"metric logging: {report['logging_ms_per_step']:.3f} ms per step "
        f"= {100 * report['logging_overhead']:.2f}% of a CA-AT step"
    )
    if "evaluation" in report:
        ev = report["evaluation"]
        for attack, label in (("pgd", "PGD-20"), ("autoattack-fast", "AutoAttack (fast)")):
            a = ev["attacks"][attack]
            console.print(
                f"evaluation, {label}: {a['images_per_sec']:.0f} images / s "
                f"({ev['images']} test images in {a['seconds']:.2f} s, {ev['model']} trained "
                f"{ev['trained_epochs']} epochs, ε={ev['eps']:g}: "
                f"{100 * a['accuracy']:.1f}% robust, {100 * ev['clean']:.1f}% clean)"
            )
    if "dashboard_start" in report:
        start = report["dashboard_start"]
        console.print(
            f"dashboard start-up: {start['seconds']:.2f} s to the first page of runs "
            f"({start['runs_in_store']} runs in the store, median of {start['repeats']})"
        )
