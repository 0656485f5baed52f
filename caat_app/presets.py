"""The preset registry: named recipes a run starts from (`--preset`); options override them.

Add a preset: one entry here (its values are RunConfig fields) and a test that it builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from caat_app.registry import Entry, Registry


@dataclass(frozen=True)
class Preset(Entry):
    """Config values, applied over the defaults and under a file's and the options'."""

    values: Mapping[str, Any] = field(default_factory=dict)


_PAPER = {
    "lr": 0.4,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "epochs": 200,
    "batch_size": 128,
    "attack": "pgd",
    "norm": "linf",
    "eps": 8 / 255,
    "alpha": 2 / 255,
    "attack_steps": 10,
    "eval_steps": 10,
    "augment": True,
    "eval_n": 2000,
}

PRESETS: Registry[Preset] = Registry(
    "preset",
    [
        Preset(
            f"paper-{dataset}-{short}",
            f"the paper's recipe, {model} on {dataset}",
            values={**_PAPER, "dataset": dataset, "model": model},
        )
        for dataset in ("cifar10", "cifar100")
        for short, model in (("r18", "resnet18"), ("r34", "resnet34"), ("wrn28-10", "wrn28-10"))
    ],
)
