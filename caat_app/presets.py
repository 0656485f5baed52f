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


_PAPER_PEFT = "paper §5 (Datasets and Models)"
_ROLI = "Hua et al. 2023 (RoLI, github.com/DongXzz/RoLI) configs/adapter"
_CHOICE = "caat's choice (the paper's PEFT appendix is not available)"

# The adversarial PEFT recipe (Figs. 4 and 5). The paper gives the models, the adapter,
# 224×224 and the attack; the rest follows the adversarial-PEFT code the paper cites
# (Hua et al. 2023, configs/adapter/{cub,stanforddogs}_roli.yaml and base-adapter-adv.yaml),
# adapted where caat differs (said in each source). No `bn`: transformers have no
# BatchNorm, and refuse `batchstats`.
_PEFT: dict[str, tuple[Any, str]] = {
    "peft": ("adapter", f"{_PAPER_PEFT}: an Adapter (Pfeiffer et al.) in every block"),
    "adapter_reduction": (8, f"{_CHOICE}: {_ROLI}: Pfeiffer adapters, reduction factor 8"),
    "image_size": (224, f"{_PAPER_PEFT}: 224×224 for the PEFT experiments"),
    "attack": ("pgd", "paper §5 (Hyper-parameters for AT): PGD, the same hyper-parameters"),
    "norm": ("linf", "paper §5 (Hyper-parameters for AT): PGD at δ = 8/255 (L∞)"),
    "eps": (8 / 255, "paper §5 (Hyper-parameters for AT): δ = 8/255; RoLI trains at 8/255 too"),
    "alpha": (2 / 255, "paper §5 (Hyper-parameters for AT): step size 2/255"),
    "attack_steps": (10, "paper §5 (Hyper-parameters for AT): 10 steps (RoLI trains with 7)"),
    "eval_steps": (10, f"{_CHOICE}: {_ROLI}: validation PGD-10"),
    "batch_size": (64, f"{_CHOICE}: {_ROLI}: batch size 64"),
    "optimizer": (
        "adamw",
        f"{_CHOICE}: {_ROLI}: AdamW, β = (0.9, 0.999) (RoLI's own AdamW has ε = 1e-6; "
        "caat's PyTorch rule 1e-8)",
    ),
    "weight_decay": (
        0.01,
        f"{_CHOICE}: {_ROLI}: its AdamW decays by 0.01 whenever weight decay is on (biases "
        "and LayerNorms excepted; caat decays every trainable tensor)",
    ),
    "schedule": (
        "cosinew",
        f"{_CHOICE}: {_ROLI} decays the rate by a cosine after a warm-up; caat's cosinew "
        "is that shape (OneCycle, 2.5 % warm-up; it also cycles AdamW's β₁ 0.95↔0.85)",
    ),
    "augment": (True, "paper §5: random crop, random horizontal flip and random rotation"),
    "eval_n": (1000, f"{_CHOICE}: the per-epoch check on 1 000 val/test images (cost at 224)"),
}
_PEFT_BY_DATA: dict[str, dict[str, tuple[Any, str]]] = {
    "cub200": {
        "epochs": (60, f"{_CHOICE}: {_ROLI}/cub_roli.yaml: 60 epochs"),
        "lr": (0.05, f"{_CHOICE}: {_ROLI}/cub_roli.yaml: BASE_LR 0.05"),
    },
    "dogs": {
        "epochs": (40, f"{_CHOICE}: {_ROLI}/stanforddogs_roli.yaml: 40 epochs"),
        "lr": (1e-4, f"{_CHOICE}: {_ROLI}/stanforddogs_roli.yaml: BASE_LR 0.0001"),
    },
}
_PEFT_MODELS = {
    "swin-t": "Swin-T, adversarially pretrained on ImageNet (no robust Swin-T checkpoint "
    "is published: ARES has swin-s/b; the paper's model is kept)",
    "vit-b16": "ViT (B/16), adversarially pretrained on ImageNet",
}


def _peft_preset(model: str, short: str, dataset: str) -> Preset:
    recipe = _PEFT | _PEFT_BY_DATA[dataset]
    values = {k: v for k, (v, _) in recipe.items()} | {"dataset": dataset, "model": model}
    sources = {k: s for k, (_, s) in recipe.items()} | {
        "dataset": f"{_PAPER_PEFT}: {'CUB-Bird' if dataset == 'cub200' else 'StanfordDogs'}",
        "model": f"{_PAPER_PEFT}: {_PEFT_MODELS[model]}",
    }
    return Preset(
        f"paper-peft-{model}-{short}",
        f"the paper's adversarial PEFT, {model} with adapters on {dataset} (--weights FILE)",
        values=values,
        sources=sources,
    )


PRESETS: Registry[Preset] = Registry(
    "preset",
    [
        *(
            _paper_preset(dataset, short, model)
            for dataset in ("cifar10", "cifar100")
            for short, model in (
                ("r18", "resnet18"),
                ("r34", "resnet34"),
                ("wrn28-10", "wrn28-10"),
            )
        ),
        *(
            _peft_preset(model, short, dataset)
            for model in ("swin-t", "vit-b16")
            for short, dataset in (("cub", "cub200"), ("dogs", "dogs"))
        ),
    ],
)
