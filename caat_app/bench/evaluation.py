"""What an evaluation costs: images per second of PGD-20 and the fast AutoAttack."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from caat_app.bench.training import sync
from caat_app.config import build_config
from caat_app.data.splits import DataSplits, load_dataset
from caat_app.training.sinks import NullSink
from caat_app.training.trainer import Trainer


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
    trainer = Trainer(config, NullSink(), data=data)
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
            sync(dev)
            start = time.perf_counter()
            acc = accuracy(model, x, y, attack, eps=config.eps, norm=config.norm)
            sync(dev)
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


def autoattack_rate(
    model: torch.nn.Module, data: DataSplits, n: int, *, eps: float, norm: str, bn: str
) -> dict[str, Any]:
    """Images per second of AutoAttack (standard) on the first `n` stratified test images,
    as `caat eval` runs it (fixed batches; a `batchstats` model attacked whole batches)."""
    from caat_app.evaluation.runner import accuracy, stratified_order

    dev = next(model.parameters()).device
    model.eval()
    order = stratified_order(data.y_test)[:n]
    x, y = data.x_test[order].to(dev), data.y_test[order].to(dev)
    whole = bn == "batchstats"
    clean = accuracy(model, x, y, None, eps=0.0, norm=norm, batch_dependent=whole)
    torch.manual_seed(0)
    sync(dev)
    start = time.perf_counter()
    robust = accuracy(model, x, y, "autoattack", eps=eps, norm=norm, batch_dependent=whole)
    sync(dev)
    seconds = time.perf_counter() - start
    return {
        "attack": "autoattack",
        "images": len(y),
        "seconds": seconds,
        "images_per_sec": len(y) / seconds,
        "accuracy": robust,
        "clean": clean,
        "eps": eps,
        "norm": norm,
    }
