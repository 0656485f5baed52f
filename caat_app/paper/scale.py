"""An experiment at a scale: its runs as validated configs, named, and each run's evaluations.

Torch-free and pure: nothing here touches the store. `paper` trains the presets the
catalogue names; `smoke` shrinks the same experiment onto the embedded digits data set
and a small CNN so the whole path runs on a laptop CPU in minutes. Budgets keep the
paper's ratios at the smoke scale: 8/255 becomes digits' usual 0.3, 12/255 becomes 0.45.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from caat_app.errors import CaatError
from caat_app.evaluation.plan import EvalSpec, eval_spec
from caat_app.paper import peft
from caat_app.paper.catalogue import EXPERIMENTS, EvalRequest, Experiment, Grid
from caat_app.presets import PRESETS
from caat_app.runs.grid import config_key, expand, name_runs

if TYPE_CHECKING:
    from caat_app.config import RunConfig

SCALES = ("paper", "smoke")
PAPER_EPS = 8 / 255
SMOKE_EPS = 0.3
RATIO = SMOKE_EPS / PAPER_EPS
"""How a paper budget becomes a smoke one: 8/255 (CIFAR's) → 0.3 (digits' default)."""
L2_RATIO = RATIO * math.sqrt((1 * 8 * 8) / (3 * 32 * 32))
"""An L2 budget also shrinks with the input's size: √(d_digits / d_CIFAR) on top of RATIO."""
SMOKE_RUN: dict[str, Any] = {"dataset": "digits", "model": "cnn", "epochs": 10, "eval_n": 0}
"""What the smoke scale trains instead of a preset's data, model and schedule length."""
SMOKE_RECIPE = ("bn", "schedule", "nesterov", "attack_steps", "norm")
"""What the smoke scale still takes from the preset: the recipe's shape, not its size."""
SMOKE_N = 200
"""Test images a smoke evaluation attacks (digits has 270)."""
SMOKE_ATTACKS = {"autoattack": "autoattack-fast"}
"""Attacks the smoke scale swaps for cheaper kin (AutoAttack's Square and FAB take minutes)."""
SMOKE_TITLE = "digits · CNN, checks the path, not the paper's claim"
SMOKE_NOTE = (
    "smoke scale: digits and a small CNN stand in for CIFAR and ResNets, budgets keep the "
    "paper's ratios (8/255 → 0.3), AutoAttack is its fast version: it checks the path "
    "from queueing to the figure, never the paper's claim"
)


@dataclass(frozen=True)
class Overrides:
    """What a person changed from the experiment: none of it is the paper's protocol."""

    seeds: tuple[int, ...] | None = None
    epochs: int | None = None
    eval_n: int | None = None
    device: str | None = None
    weights: str | None = None  # a PEFT experiment's base weights at the paper scale


@dataclass(frozen=True)
class PlannedRun:
    """One run of the experiment: its config (named), its panel, its evaluations."""

    config: RunConfig
    panel: str
    figure: str
    evaluations: tuple[EvalSpec, ...]
    paper_model: str  # the model of the paper's panel (the smoke scale trains a CNN for it)


@dataclass(frozen=True)
class Plan:
    """The experiment at a scale: its sweep's name, its runs, what differs from the paper."""

    experiment: Experiment
    scale: str
    sweep: str
    runs: tuple[PlannedRun, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    pretrain: tuple[PlannedRun, ...] = ()  # PEFT at the smoke scale: stage 1, trained first
    pretrain_sweep: str = ""

    @property
    def smoke(self) -> bool:
        return self.scale == "smoke"

    @property
    def ratio(self) -> float:
        """A paper budget times this is the scale's budget."""
        return RATIO if self.smoke else 1.0

    @property
    def title(self) -> str:
        """What the smoke scale trains instead of the paper's models."""
        return peft.SMOKE_TITLE if self.experiment.base_weights else SMOKE_TITLE

    def panels(self) -> list[str]:
        """The panels in the catalogue's order, each once."""
        return list(dict.fromkeys(r.panel for r in self.runs))


def experiment(name: str) -> Experiment:
    """A runnable experiment by id, or a one-line CaatError saying why not."""
    if name not in EXPERIMENTS:
        raise CaatError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    if not exp.available:
        raise CaatError(f"{name} is not available yet: it {exp.unavailable}")
    return exp


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise CaatError(f"--scale: unknown {scale!r}; choose one of {', '.join(SCALES)}")
    return scale


def sweep_name(exp: Experiment, scale: str, overrides: Overrides) -> str:
    """`paper-fig6a`, `paper-fig6a-smoke`; a changed schedule length gets a sweep of its own."""
    name = f"paper-{exp.id}" + ("-smoke" if scale == "smoke" else "")
    return name + (f"-e{overrides.epochs}" if overrides.epochs is not None else "")


def _scaled(key: str, values: Sequence[Any], smoke: bool) -> list[Any]:
    """A swept field's values at the scale: budgets shrink at the smoke scale."""
    if smoke and key in {"eps", "alpha"}:
        return [v * RATIO for v in values]
    return list(values)


def _base(exp: Experiment, grid: Grid, smoke: bool, overrides: Overrides) -> dict[str, Any]:
    """What every run of the grid shares: the preset, or the smoke stand-ins."""
    recipe = PRESETS[grid.preset].values
    if smoke and exp.base_weights:
        base = peft.smoke_base(recipe)
    elif smoke:
        base = {**{k: recipe[k] for k in SMOKE_RECIPE if k in recipe}, **SMOKE_RUN}
    else:
        base = {"preset": grid.preset}
        if exp.base_weights and overrides.weights is not None:
            base["weights"] = overrides.weights
    if overrides.epochs is not None:
        base["epochs"] = overrides.epochs
    if overrides.device is not None:
        base["device"] = overrides.device
    return base


def _grid_configs(
    exp: Experiment, grid: Grid, smoke: bool, overrides: Overrides
) -> list[RunConfig]:
    """The grid's configs: both families, every swept value, every seed (validated)."""
    lam = exp.smoke_lam if smoke and exp.smoke_lam is not None else grid.lam
    gamma = exp.smoke_gamma if smoke and exp.smoke_gamma is not None else grid.gamma
    lists: dict[str, list[Any]] = {k: _scaled(k, v, smoke) for k, v in grid.fields.items()}
    lists["method"] = [m for m, values in (("vanilla", lam), ("caat", gamma)) if values]
    lists["lam"], lists["gamma"] = list(lam), list(gamma)
    return expand(_base(exp, grid, smoke, overrides), lists, list(overrides.seeds or (0,)))


def _specs(
    requests: Sequence[EvalRequest], cfg: RunConfig, smoke: bool, overrides: Overrides
) -> tuple[EvalSpec, ...]:
    """The run's evaluations at the scale, checked as `caat eval` checks them."""
    specs = []
    for req in requests:
        ratio = (L2_RATIO if req.norm == "l2" else RATIO) if smoke else 1.0
        budgets = [b * ratio for b in req.budgets] or [cfg.eps]
        attacks = [SMOKE_ATTACKS.get(a, a) if smoke else a for a in req.attacks]
        smoke_n = SMOKE_N if req.n else 0  # all: the held-out task has fewer than SMOKE_N
        n = overrides.eval_n if overrides.eval_n is not None else (smoke_n if smoke else req.n)
        device = overrides.device or "auto"
        specs.append(eval_spec(attacks=attacks, budgets=budgets, norm=req.norm, n=n, device=device))
    return tuple(specs)


def resolve(name: str, scale: str = "paper", overrides: Overrides | None = None) -> Plan:
    """The experiment's runs and evaluations at `scale`; every config validated, none stored.

    Configs that come out the same (the smoke scale folds Fig. 3a's four panels into one)
    are kept once, under the first panel that asked for them.
    """
    exp = experiment(name)
    smoke = check_scale(scale) == "smoke"
    overrides = overrides or Overrides()
    peft.check_weights_option(name, exp.base_weights, overrides.weights)
    sweep = sweep_name(exp, scale, overrides)
    picked: dict[str, tuple[RunConfig, Grid]] = {}
    for grid in exp.grids:
        for cfg in _grid_configs(exp, grid, smoke, overrides):
            picked.setdefault(config_key(cfg), (cfg, grid))
    configs = [cfg for cfg, _ in picked.values()]
    pretrain: tuple[PlannedRun, ...] = ()
    if smoke and exp.base_weights:
        pretrain = _pretrain(peft.pretrain_sweep(sweep), overrides)
        stand_in = peft.STAGE1_WEIGHTS.format(sweep=peft.pretrain_sweep(sweep))
        configs = [with_weights(cfg, stand_in) for cfg in configs]
    named = name_runs(sweep, configs)
    model = str(configs[0].model) if configs else ""
    runs = tuple(
        PlannedRun(
            config=cfg,
            panel=f"digits · {model} (for {grid.panel})" if smoke else grid.panel,
            figure=grid.figure,
            evaluations=_specs(exp.evaluations, cfg, smoke, overrides),
            paper_model=str(PRESETS[grid.preset].values.get("model", "")),
        )
        for cfg, (_, grid) in zip(named, picked.values(), strict=True)
    )
    notes = _notes(exp, smoke, overrides, peft.pretrain_sweep(sweep) if pretrain else "")
    return Plan(
        exp, scale, sweep, runs, notes, pretrain, peft.pretrain_sweep(sweep) * bool(pretrain)
    )


def with_weights(cfg: RunConfig, weights: str) -> RunConfig:
    """The config on other base weights: stage 1's file, or its stand-in before it exists."""
    from caat_app.config import config_from_json

    return config_from_json({**cfg.model_dump(mode="json"), "weights": weights})


def on_stage1(plan_: Plan, weights: str) -> Plan:
    """The plan with stage 2 fine-tuning stage 1's `best.pt` (known once it has finished)."""
    runs = tuple(replace(r, config=with_weights(r.config, weights)) for r in plan_.runs)
    return replace(plan_, runs=runs)


def _pretrain(sweep: str, overrides: Overrides) -> tuple[PlannedRun, ...]:
    """Stage 1 at the smoke scale: one adversarially trained vit-micro per seed."""
    base = dict(peft.PRETRAIN_RUN)
    if overrides.epochs is not None:
        base["epochs"] = overrides.epochs
    if overrides.device is not None:
        base["device"] = overrides.device
    configs = name_runs(sweep, expand(base, {}, list(overrides.seeds or (0,))))
    panel = "stage 1: digits 0–4 · vit-micro, pretrained"
    return tuple(PlannedRun(c, panel, "", (), "") for c in configs)


def _notes(
    exp: Experiment, smoke: bool, overrides: Overrides, pretrain: str = ""
) -> tuple[str, ...]:
    """What a reader must know before trusting the result: caat's choices, then changes."""
    notes = list(exp.notes)
    if smoke:
        notes.insert(0, peft.SMOKE_NOTE.format(pretrain=pretrain) if pretrain else SMOKE_NOTE)
    elif exp.base_weights and overrides.weights is None:
        notes.append(f"no --weights: {peft.weights_complaint(exp.id, exp.base_weights)}")
    if overrides.epochs is not None:
        notes.append(f"--epochs {overrides.epochs}: every run trains that long, not the preset's")
    if overrides.eval_n is not None:
        notes.append(f"--eval-n {overrides.eval_n}: evaluations attack that many test images")
    return tuple(notes)
