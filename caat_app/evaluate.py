"""Robustness evaluation of a saved run: the paper's attack table, stored and reused.

Each (attack, ε) is measured on the first N test images of a fixed stratified order,
against the run's best (validation-chosen) or last checkpoint, loaded weights-only.
A result identical in run, checkpoint, attack, norm, ε, sample count and settings is
taken from the store instead of being measured again, unless `force`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from caat_app import attacks as A
from caat_app.config import RunConfig, config_from_json
from caat_app.data import load_dataset
from caat_app.errors import CaatError
from caat_app.train import build, resolve_device
from storage import Run, Store

EVAL_ATTACKS = (
    "fgsm",
    "pgd",
    "mifgsm",
    "apgd-ce",
    "apgd-dlr",
    "apgd-t",
    "fab",
    "fab-t",
    "square",
    "autoattack",
    "autoattack-fast",
)
CHECKPOINTS = ("best", "last")
BATCH = 256  # fixed: a `batchstats` model's predictions depend on the batch


def settings_of(attack: str, eps: float) -> dict[str, Any]:
    """The settings an attack runs with (stored with its result, part of its identity)."""
    return {
        "fgsm": {},
        "pgd": {"steps": 20, "alpha": eps / 4, "random_start": True},
        "mifgsm": {"steps": 10, "decay": 1.0},
        "apgd-ce": {"steps": 100, "loss": "ce"},
        "apgd-dlr": {"steps": 100, "loss": "dlr"},
        "apgd-t": {"steps": 100, "target_classes": 9},
        "fab": {"steps": 100},
        "fab-t": {"steps": 100, "target_classes": 9},
        "square": {"queries": 5000},
        "autoattack": {"version": "standard"},
        "autoattack-fast": {"version": "fast"},
    }[attack]


def attack_batch(
    name: str, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str
) -> Tensor:
    """Adversarial examples for one batch by an evaluation attack's name."""
    s = settings_of(name, eps)
    if name == "fgsm":
        return A.fgsm(model, x, y, eps=eps, norm=norm)
    if name == "pgd":
        return A.pgd(model, x, y, eps=eps, alpha=s["alpha"], steps=s["steps"], norm=norm)
    if name == "mifgsm":
        return A.mifgsm(model, x, y, eps=eps, steps=s["steps"], decay=s["decay"], norm=norm)
    if name in {"apgd-ce", "apgd-dlr", "apgd-t"}:
        return A.apgd(
            model,
            x,
            y,
            eps=eps,
            norm=norm,
            steps=s["steps"],
            loss=s.get("loss", "ce"),
            targeted=name == "apgd-t",
        )
    if name in {"fab", "fab-t"}:
        return A.fab(model, x, y, eps=eps, norm=norm, steps=s["steps"], targeted=name == "fab-t")
    if name == "square":
        return A.square(model, x, y, eps=eps, norm=norm, queries=s["queries"])
    if name.startswith("autoattack"):
        x_adv, _ = A.autoattack(model, x, y, eps=eps, norm=norm, version=s["version"])
        return x_adv
    raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(EVAL_ATTACKS)}")


def stratified_order(y: Tensor) -> Tensor:
    """Test indices taking classes in turn: any first N is as balanced as N allows."""
    by_class = [torch.nonzero(y == c).flatten() for c in torch.unique(y)]
    order = []
    for i in range(max(len(idx) for idx in by_class)):
        order += [int(idx[i]) for idx in by_class if i < len(idx)]
    return torch.tensor(order, dtype=torch.long)


def load_run_model(
    run: Run, checkpoint: str, device: str = "auto"
) -> tuple[nn.Module, RunConfig, Any]:
    """The run's model with a checkpoint's weights (never anything but weights)."""
    if checkpoint not in CHECKPOINTS:
        raise CaatError(f"--checkpoint: unknown {checkpoint!r}; choose one of best, last")
    path = Path(run.run_dir) / f"{checkpoint}.pt"
    if not path.is_file():
        raise CaatError(f"run {run.id} has no {checkpoint} checkpoint at {path}")
    config = config_from_json(json.loads(run.config))
    dev = resolve_device(device)
    root = Path(config.data_dir) if config.data_dir else None
    data = load_dataset(config.dataset, root=root, download=config.download)
    model = build(config, data, dev)
    state = torch.load(path, map_location=dev, weights_only=True)
    model.load_state_dict(state["model"])
    model.eval()
    return model, config, data


def accuracy(
    model: nn.Module, x: Tensor, y: Tensor, attack: str | None, *, eps: float, norm: str
) -> float:
    """Accuracy on clean inputs (`attack` None) or under an attack, in fixed batches."""
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, len(y), BATCH):
        xb, yb = x[start : start + BATCH], y[start : start + BATCH]
        if attack is not None and eps > 0:
            xb = attack_batch(attack, model, xb, yb, eps=eps, norm=norm)
        with torch.no_grad():
            correct += (model(xb).argmax(1) == yb).sum()
    return int(correct) / max(len(y), 1)


def evaluate_run(
    store: Store,
    run: Run,
    *,
    attacks: list[str],
    eps_list: list[float],
    norm: str = "linf",
    n: int = 1000,
    checkpoint: str = "best",
    force: bool = False,
    device: str = "auto",
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Clean accuracy, then every attack at every ε; each result stored as it completes."""
    unknown = [a for a in attacks if a not in EVAL_ATTACKS]
    if unknown:
        raise CaatError(
            f"--attacks: unknown {', '.join(unknown)}; choose from {', '.join(EVAL_ATTACKS)}"
        )
    if norm not in A.NORMS:
        raise CaatError(f"--norm: unknown {norm!r}; choose one of {', '.join(A.NORMS)}")
    assert run.id is not None
    model, _, data = load_run_model(run, checkpoint, device)
    dev = next(model.parameters()).device
    order = stratified_order(data.y_test)[:n] if n > 0 else torch.arange(len(data.y_test))
    x, y = data.x_test[order].to(dev), data.y_test[order].to(dev)
    cached = {
        (r.attack, r.norm, round(r.eps, 12), r.samples, r.settings): r
        for r in store.evals(run.id, checkpoint=checkpoint)
    }
    jobs = [("clean", 0.0)] + [(a, e) for e in eps_list for a in attacks]
    results = []
    for attack, eps in jobs:
        settings = json.dumps({} if attack == "clean" else settings_of(attack, eps), sort_keys=True)
        key = (attack, norm, round(eps, 12), len(y), settings)
        hit = cached.get(key)
        if hit is not None and not force:
            row = {
                "attack": attack,
                "norm": norm,
                "eps": eps,
                "samples": len(y),
                "accuracy": hit.accuracy,
                "seconds": hit.seconds,
                "settings": settings,
                "checkpoint": checkpoint,
                "cached": True,
            }
        else:
            torch.manual_seed(0)
            start = time.perf_counter()
            acc = accuracy(model, x, y, None if attack == "clean" else attack, eps=eps, norm=norm)
            row = {
                "attack": attack,
                "norm": norm,
                "eps": eps,
                "samples": len(y),
                "accuracy": acc,
                "seconds": time.perf_counter() - start,
                "settings": settings,
                "checkpoint": checkpoint,
                "cached": False,
            }
            store.add_evals(
                run.id,
                [
                    {
                        k: row[k]
                        for k in (
                            "checkpoint",
                            "attack",
                            "norm",
                            "eps",
                            "samples",
                            "accuracy",
                            "seconds",
                            "settings",
                        )
                    }
                ],
            )
        results.append(row)
        if on_result is not None:
            on_result(row)
    return results
