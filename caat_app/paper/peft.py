"""The PEFT experiments' two stages (Figs. 4 and 5): the base model, then adapters on it.

Torch-free data. At the paper scale the base is the person's file (`--weights`: a robust
ImageNet checkpoint), so there is one stage. The smoke scale makes its own base: stage 1
trains `vit-micro` adversarially on digits 0–4 as an ordinary caat run in a sweep of its
own; stage 2 fine-tunes adapters on it (its `best.pt`) for the held-out task, digits 5–9
relabelled 0–4. Stage 2's configs name that file, so they exist only once stage 1 has
finished; before that they carry `STAGE1_WEIGHTS` (a dry run shows them so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caat_app.errors import CaatError

PRETRAIN_LABELS = (0, 1, 2, 3, 4)
"""Stage 1's task: the digits the base model learns (its 'ImageNet')."""
HELD_OUT_LABELS = (5, 6, 7, 8, 9)
"""Stage 2's task: digits the base never saw, relabelled 0–4."""
SMOKE_VIT: dict[str, Any] = {
    "dataset": "digits",
    "model": "vit-micro",
    "image_size": 16,
    "eps": 0.1,
    "eval_n": 0,
    "epochs": 10,
    "batch_size": 32,
    "augment": False,
}
"""Both stages at the smoke scale: the CPU-sized ViT on digits upscaled to 16×16 (16 patches
of 4×4), at ε = 0.1. The from-scratch smoke scale's 0.3 left vit-micro at chance in
stage 1 with every optimiser and rate tried, so the PEFT smoke path attacks at 0.1."""
PRETRAIN_RUN: dict[str, Any] = {
    **SMOKE_VIT,
    "labels": PRETRAIN_LABELS,
    "peft": "full",
    "method": "vanilla",
    "lam": 0.5,
    "epochs": 20,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.05,
    "attack_steps": 5,
    "eval_steps": 5,
}
"""Stage 1: Vanilla AT λ = 0.5 with PGD-5 and AdamW (10⁻³, decay 0.05), every weight
trained: a base both accurate and robust, as the robust ImageNet checkpoints are. With
SGD, at any rate from 0.01 to 0.1, this ViT stayed at chance under adversarial training."""
SMOKE_RECIPE = (
    "schedule",
    "attack_steps",
    "norm",
    "peft",
    "adapter_reduction",
    "optimizer",
    "weight_decay",
)
"""What stage 2 takes from the paper's PEFT preset: the recipe's shape, not its size."""
SMOKE_LR = 5e-3
"""Stage 2's peak rate: the presets' (0.05 on CUB, 10⁻⁴ on Dogs) are for ViT-B and Swin-T;
for vit-micro's adapters 5·10⁻³ learnt best of 2·10⁻³ and 5·10⁻³ (and SGD at 0.05)."""
STAGE1_WEIGHTS = "<best.pt of stage 1: {sweep}>"
"""Stage 2's weights until stage 1 has finished (a dry run, or stage 1 still training)."""
SMOKE_TITLE = "digits · vit-micro with adapters, checks the path, not the paper's claim"
SMOKE_NOTE = (
    "smoke scale: stage 1 pretrains vit-micro adversarially (Vanilla AT λ = 0.5, AdamW) on "
    "digits 0–4 at 16×16 (sweep {pretrain}); stage 2 fine-tunes adapters on its best.pt for "
    "digits 5–9 relabelled 0–4; both at ε = 0.1 (vit-micro stays at chance at 0.3), fast "
    "AutoAttack on the held-out test images: it checks the path from pretraining to the "
    "front, never the paper's claim"
)


def pretrain_sweep(sweep: str) -> str:
    """Stage 1's own sweep, next to the experiment's: `paper-fig4-smoke-pretrain`."""
    return f"{sweep}-pretrain"


def smoke_base(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """Stage 2's shared values at the smoke scale (its weights are set afterwards)."""
    shape = {k: recipe[k] for k in SMOKE_RECIPE if k in recipe}
    return {**shape, **SMOKE_VIT, "lr": SMOKE_LR, "labels": HELD_OUT_LABELS}


def weights_complaint(experiment: str, wanted: str) -> str:
    """The one line for a paper-scale PEFT run without its base weights."""
    return f"{experiment} needs --weights: {wanted}, see the README's Fine-tuning section"


def check_weights_option(experiment: str, base_weights: str, weights: str | None) -> None:
    """`--weights` only where an experiment fine-tunes a pretrained model."""
    if weights is not None and not base_weights:
        raise CaatError(f"--weights: {experiment} trains from scratch; only fig4 and fig5 take it")
