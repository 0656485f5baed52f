"""The adversarial examples a training step sees, made once here for the trainer and the lab."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from caat_app.attacks.registry import run_attack
from caat_app.config import RunConfig
from caat_app.method.losses import attack_objective
from caat_app.method.registry import LOSSES


def training_examples(model: nn.Module, cfg: RunConfig, x: Tensor, y: Tensor) -> Tensor:
    """x′ as training makes it: the run's attack, budget, step, steps and norm, ascending the
    loss's objective (its clean prediction taken in eval mode) from the loss's start."""
    objective = None
    if LOSSES[cfg.loss].objective:
        was = model.training
        model.eval()
        with torch.no_grad():
            objective = attack_objective(cfg.loss, model(x))
        model.train(was)
    return run_attack(
        cfg.attack,
        model,
        x,
        y,
        eps=cfg.eps,
        alpha=cfg.step_size,
        steps=cfg.attack_steps,
        norm=cfg.norm,
        loss_fn=objective,
        start_noise=LOSSES[cfg.loss].start_noise,
    )
