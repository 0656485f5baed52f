"""The preset registry: named recipes a run starts from (`--preset`); options override them.

Every value of a preset says where it comes from (`sources`): a section of the paper or
a file of its official code (`chrisyxue/CA-AT`, branch master), so a reader can check
it. `caat train --preset P --dry-run` prints each value with its source.

Add a preset: one entry here (its values are RunConfig fields, each with a source) and
a test that it builds.
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
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = sorted(set(self.values) - set(self.sources))
        if missing:
            raise ValueError(f"preset {self.name}: no source for {', '.join(missing)}")


_ARGS = "official checkpoint args.txt"
_PARSER = "official core/utils/parser.py"
_PAPER_SETUP = "paper §5 (experimental setup)"

# Field → (value, where it comes from). The released checkpoints' args.txt
# (checkpoints/1_resnet18_adver_thres_thres_0.8/…/args.txt) is the most specific source.
_PAPER: dict[str, tuple[Any, str]] = {
    "bn": ("batchstats", f"{_PAPER_SETUP}: running mean and variance off in every BN"),
    "batch_size": (1024, f"{_ARGS}: batch_size 1024"),
    "lr": (0.4, f"{_ARGS}: lr 0.4"),
    "schedule": ("cosinew", f"{_ARGS}: scheduler cosinew (core/utils/train.py)"),
    "nesterov": (True, f"{_ARGS}: nesterov true"),
    "weight_decay": (5e-4, f"{_ARGS}: weight_decay 0.0005"),
    "epochs": (200, f"{_ARGS}: num_adv_epochs 200"),
    "attack": ("pgd", f"{_ARGS}: attack linf-pgd"),
    "norm": ("linf", f"{_ARGS}: attack linf-pgd"),
    "eps": (8 / 255, f"{_ARGS}: attack_eps 8/255"),
    "alpha": (2 / 255, f"{_ARGS}: attack_step 2/255"),
    "attack_steps": (10, f"{_ARGS}: attack_iter 10"),
    "eval_steps": (20, "official core/utils/train.py: eval attack is PGD with 2×attack_iter"),
    "augment": (True, f"{_ARGS}: augment true (random crop and flip)"),
    "eval_n": (2000, "caat: per-epoch check on 2 000 val/test images (official: all, every 25)"),
}


def _paper_preset(dataset: str, short: str, model: str) -> Preset:
    values = {k: v for k, (v, _) in _PAPER.items()} | {"dataset": dataset, "model": model}
    sources = {k: s for k, (_, s) in _PAPER.items()} | {
        "dataset": f"{_PAPER_SETUP}: {dataset}",
        "model": f"{_PAPER_SETUP}: {model}",
    }
    return Preset(
        f"paper-{dataset}-{short}",
        f"the paper's recipe, {model} on {dataset}",
        values=values,
        sources=sources,
    )


PRESETS: Registry[Preset] = Registry(
    "preset",
    [
        _paper_preset(dataset, short, model)
        for dataset in ("cifar10", "cifar100")
        for short, model in (("r18", "resnet18"), ("r34", "resnet34"), ("wrn28-10", "wrn28-10"))
    ],
)
