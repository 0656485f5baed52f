"""The attack registry: every attack by name, with its settings, help and where it may be used.

Add an attack here (one entry) and in its family's file; `caat eval`'s choices and help,
the evaluation plan, the stored settings, `caat train --attack` and the dashboard's forms
all follow. Torch-free: the implementations are imported when an attack runs.

An entry's `settings(ε)` are stored with every result it measures (they are part of the
result's identity, so a stored result is reused only for the same settings) and passed
to its function together with `fixed`. A training attack runs the same settings with the
run's own options where it reads them (`training`: step size, steps, the loss's own
objective, a seed drawn from the run's generator).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from caat_app.registry import Entry, Registry, one_of

if TYPE_CHECKING:
    from torch import Tensor, nn

NORMS = ("linf", "l2")

# The run options a training attack may read (see `run_attack`).
TRAINING_OPTIONS = ("alpha", "steps", "loss_fn", "start_noise", "seed")


def _none(eps: float) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Attack(Entry):
    """One attack: how it runs in an evaluation, and whether (and how) it can train."""

    settings: Callable[[float], dict[str, Any]] = _none
    fixed: Mapping[str, Any] = field(default_factory=dict)
    # The run options it reads when it trains (TRAINING_OPTIONS); None: evaluation only.
    training: tuple[str, ...] | None = None
    evaluation: bool = True  # offered by `caat eval`
    norms: tuple[str, ...] = NORMS

    def __post_init__(self) -> None:
        unknown = set(self.training or ()) - set(TRAINING_OPTIONS)
        if unknown:  # a misspelt option would silently never reach the attack
            raise ValueError(f"attack {self.name}: unknown training options {sorted(unknown)}")

    @property
    def takes_objective(self) -> bool:
        """Whether it ascends a loss the run gives it (TRADES' KL), not its own."""
        return self.training is not None and "loss_fn" in self.training


def _pgd(steps: int) -> Callable[[float], dict[str, Any]]:
    return lambda eps: {"steps": steps, "alpha": eps / 4, "random_start": True}


ATTACKS: Registry[Attack] = Registry(
    "attack",
    [
        Attack(
            "fgsm",
            "one signed-gradient step",
            "caat_app.attacks.fgsm:fgsm",
            training=("loss_fn", "start_noise"),
        ),
        Attack(
            "pgd",
            "PGD, 20 steps of ε/4, random start",
            "caat_app.attacks.pgd:pgd",
            settings=_pgd(20),
            training=("alpha", "steps", "loss_fn", "start_noise"),
        ),
        Attack(
            "pgd-100",
            "the same PGD with 100 steps",
            "caat_app.attacks.pgd:pgd",
            settings=_pgd(100),
        ),
        Attack(
            "pgd-t",
            "targeted PGD-20 towards the runner-up class",
            "caat_app.attacks.pgd:pgd_targeted",
            settings=lambda eps: {**_pgd(20)(eps), "target": "runner-up"},
        ),
        Attack(
            "mifgsm",
            "momentum iterative FGSM, 10 steps",
            "caat_app.attacks.mifgsm:mifgsm",
            settings=lambda eps: {"steps": 10, "decay": 1.0},
            training=("alpha", "steps", "loss_fn", "start_noise"),
        ),
        Attack(
            "apgd-ce",
            "AutoPGD, cross-entropy, 100 steps",
            "caat_app.attacks.apgd:apgd",
            settings=lambda eps: {"steps": 100, "loss": "ce"},
            training=("steps", "seed"),
        ),
        Attack(
            "apgd-dlr",
            "AutoPGD, DLR loss, 100 steps",
            "caat_app.attacks.apgd:apgd",
            settings=lambda eps: {"steps": 100, "loss": "dlr"},
            training=("steps", "seed"),
        ),
        Attack(
            "apgd-t",
            "targeted AutoPGD-DLR, 9 targets",
            "caat_app.attacks.apgd:apgd",
            settings=lambda eps: {"steps": 100, "target_classes": 9},
            fixed={"targeted": True},
            training=("steps", "seed"),
        ),
        Attack(
            "fab",
            "FAB, minimal-norm, 100 steps",
            "caat_app.attacks.fab:fab",
            settings=lambda eps: {"steps": 100},
        ),
        Attack(
            "fab-t",
            "targeted FAB, 9 targets",
            "caat_app.attacks.fab:fab",
            settings=lambda eps: {"steps": 100, "target_classes": 9},
            fixed={"targeted": True},
        ),
        Attack(
            "square",
            "Square, black-box, 5000 queries",
            "caat_app.attacks.square:square",
            settings=lambda eps: {"queries": 5000},
        ),
        Attack(
            "autoattack",
            "AutoAttack standard: the number to quote",
            "caat_app.attacks.autoattack:autoattack_examples",
            settings=lambda eps: {"version": "standard"},
        ),
        Attack(
            "autoattack-fast",
            "APGD-CE then APGD-T",
            "caat_app.attacks.autoattack:autoattack_examples",
            settings=lambda eps: {"version": "fast"},
        ),
    ],
)

DEFAULT_TRAINING_ATTACK = "pgd"
TRAINING_ATTACKS = (
    DEFAULT_TRAINING_ATTACK,
    *(
        a.name
        for a in ATTACKS.values()
        if a.training is not None and a.name != DEFAULT_TRAINING_ATTACK
    ),
)
"""Attacks a run can train with, its default first."""
OBJECTIVE_ATTACKS = tuple(n for n in TRAINING_ATTACKS if ATTACKS[n].takes_objective)
"""Training attacks that ascend the loss's own objective (TRADES needs one of them)."""


def objective_complaint(attack: str) -> str | None:
    """Why an attack cannot train with a loss that brings its own objective (or None)."""
    if attack in OBJECTIVE_ATTACKS:
        return None
    return (
        f"{attack} brings its own objective; TRADES needs {one_of(OBJECTIVE_ATTACKS)} "
        "(they ascend the TRADES KL)"
    )


def attack_examples(
    name: str, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str
) -> Tensor:
    """Adversarial examples by an evaluation attack's name, with its registered settings."""
    attack = ATTACKS[name]
    return attack.load()(model, x, y, eps=eps, norm=norm, **attack.settings(eps), **attack.fixed)  # type: ignore[no-any-return]


def run_attack(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    start_noise: float = 0.0,
) -> Tensor:
    """A training attack by its config name, with the run's step size, steps and objective.

    `start_noise` is the loss's start (TRADES: 0.001·N(0, 1) around x), read by the attacks
    that ascend the loss's objective.

    An attack reads only the options its entry names (FGSM takes neither `alpha` nor
    `steps`; AutoPGD sets its own step sizes and objective). AutoPGD's seed is drawn
    from the global generator, on the CPU (no device sync), so a seeded run repeats.
    """
    if name not in TRAINING_ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(TRAINING_ATTACKS)}")
    attack = ATTACKS[name]
    given: dict[str, Any] = {
        "alpha": alpha,
        "steps": steps,
        "loss_fn": loss_fn,
        "start_noise": start_noise,
    }
    if "seed" in (attack.training or ()):
        import torch

        given["seed"] = int(torch.randint(0, 2**31 - 1, ()))
    reads = {k: given[k] for k in attack.training or () if k in given}
    kwargs = {**attack.settings(eps), **attack.fixed, **reads}
    return attack.load()(model, x, y, eps=eps, norm=norm, **kwargs)  # type: ignore[no-any-return]
