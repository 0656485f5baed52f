"""The paper's experiments as data: what each trains, what it measures, how it is reported.

Torch-free. An experiment names paper presets (`paper-cifar10-r18`, …) and never copies
their values: what a preset means is decided in `caat_app.presets` alone. The grids and
evaluations follow Section 5 and the captions of Figures 3 to 8 and Table 1 of
"Conflict-Aware Adversarial Training"; where the paper is silent the choice caat made
is written down in the experiment's `notes`, so a reader sees it next to the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from caat_app.registry import Entry, Registry

ReportKind = Literal["front", "mu", "budget", "table", "synth"]
REPORTS: dict[str, str] = {
    "front": "SA-AA fronts of Vanilla AT and CA-AT",
    "mu": "the conflict μ per epoch while training",
    "budget": "accuracy against the attack budget, one line per method and training ε",
    "table": "a table beside the paper's own numbers",
    "synth": "Fig. 2a: t-SNE of per-sample g_c and g_a per δ; 2b: SA, AA, μ and the bound",
}
"""What each kind of report draws (the figure's layout follows the paper's)."""

LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Vanilla AT's λ in the fronts of Figs. 6 and 7 (Section 5.3)."""
GAMMAS = (0.7, 0.75, 0.8, 0.85, 0.9, 1.0)
"""CA-AT's γ in the fronts of Figs. 6 and 7 (Section 5.3)."""
SMOKE_LAMBDAS = (0.0, 0.5, 1.0)
SMOKE_GAMMAS = (0.7, 0.8, 0.9)
"""The smoke scale's fewer points: both families, three each, so each has a front."""

TABLE1_ATTACKS = ("pgd", "apgd-ce", "mifgsm", "fab", "fab-t", "fgsm")
"""Table 1's columns (PGD, AutoPGD, MIFGSM, FAB, T-FAB, FGSM) as caat's attacks."""
TABLE1_BUDGETS = (8 / 255, 16 / 255, 24 / 255, 32 / 255)
"""Table 1's rows: L∞ budgets."""
FIG8_BUDGETS = (4 / 255, 8 / 255, 12 / 255, 16 / 255, 24 / 255, 32 / 255)
"""Fig. 8's x-axis (the paper prints no values): Table 1's budgets, both training ε, and 4/255."""
FULL_TEST = 10_000
"""Images evaluated at the paper's scale: the whole CIFAR test set."""


@dataclass(frozen=True)
class Grid:
    """One panel's runs: a paper preset, the fields it sets, and each family's points.

    `fields` maps RunConfig fields to the values swept (one value: set for every run).
    `lam` are Vanilla AT's λ, `gamma` CA-AT's γ; an empty tuple leaves that family out.
    """

    panel: str
    preset: str
    lam: tuple[float, ...]
    gamma: tuple[float, ...]
    fields: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    figure: str = ""  # the sub-figure it is drawn in (Fig. 3a, 3b), "" for the one figure


@dataclass(frozen=True)
class EvalRequest:
    """Attacks × budgets on the first `n` test images of every run (best checkpoint).

    No budgets: the run's own training ε.
    """

    attacks: tuple[str, ...]
    budgets: tuple[float, ...] = ()
    norm: str = "linf"
    n: int = FULL_TEST


@dataclass(frozen=True)
class Experiment(Entry):
    """One figure or table of the paper. `name` is its id (`fig6a`), `help` its title."""

    source: str = ""  # where in the paper
    shows: str = ""  # what the paper shows with it
    grids: tuple[Grid, ...] = ()
    evaluations: tuple[EvalRequest, ...] = ()
    report: ReportKind = "front"
    smoke_lam: tuple[float, ...] | None = None  # None: the paper's λ at the smoke scale too
    smoke_gamma: tuple[float, ...] | None = None
    notes: tuple[str, ...] = ()  # where caat had to choose what the paper does not say
    unavailable: str = ""  # why it cannot run yet; "" when it can
    base_weights: str = ""  # PEFT: the pretrained file `--weights` names at the paper scale

    @property
    def id(self) -> str:
        return self.name

    @property
    def available(self) -> bool:
        return not self.unavailable


def _front(
    name: str,
    title: str,
    panel: str,
    preset: str,
    loss: str,
    evaluations: tuple[EvalRequest, ...],
    *extra_notes: str,
) -> Experiment:
    """A Fig. 6/7 front: Vanilla AT over the paper's λ, CA-AT over its γ, one loss."""
    return Experiment(
        name,
        title,
        source=f"Section 5.3, Fig. {name.removeprefix('fig')}",
        shows="most CA-AT points lie up and to the right of Vanilla AT's: a better SA-AA front",
        grids=(Grid(panel, preset, LAMBDAS, GAMMAS, {"loss": (loss,)}),),
        evaluations=evaluations,
        report="front",
        smoke_lam=SMOKE_LAMBDAS,
        smoke_gamma=SMOKE_GAMMAS,
        notes=(
            "AA is AutoAttack (standard) at the training ε: the paper does not name the "
            "attack of its AA axis, and AutoAttack is the number to quote",
            *extra_notes,
        ),
    )


_FIG6_EVAL = (EvalRequest(("autoattack", "pgd")),)
_FIG7_EVAL = (
    EvalRequest(("autoattack", "pgd", "mifgsm", "fab-t")),
    EvalRequest(("pgd-t",), budgets=(0.5,), norm="l2"),
)
_FIG7_NOTE = (
    "T-PGD is L2 at ε = 0.5 (the paper does not give its budget; 0.5 is the usual CIFAR L2 one)"
)
_PGD = {"loss": ("ce",), "attack": ("pgd",)}
FIG3_BUDGETS = (4 / 255, 8 / 255, 12 / 255, 16 / 255)
"""The training budgets of the budget view (Fig. 3c, caat's addition)."""


def _fig3() -> Experiment:
    panels = [
        Grid(f"{data} · {net}", f"paper-{key}-{short}", (0.5, 1.0), (0.8, 0.9), _PGD, "a")
        for key, data in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"))
        for short, net in (("r18", "ResNet-18"), ("r34", "ResNet-34"))
    ]
    panels += [
        Grid(
            f"CIFAR-10 · ResNet-18 · {title}",
            "paper-cifar10-r18",
            (0.5, 1.0),
            (0.8, 0.9),
            {"loss": ("ce",), "attack": (attack,)},
            "b",
        )
        for attack, title in (
            ("apgd-ce", "AutoPGD"),
            ("apgd-dlr", "AutoPGD-DLR"),
            ("apgd-t", "T-AutoPGD-DLR"),
        )
    ]
    # Not in the paper's Fig. 3: the budget view of issue 11 (Section 3's claim that μ grows
    # with the budget, on real runs); runs that differ only in ε.
    panels.append(
        Grid(
            "CIFAR-10 · ResNet-18 · training budgets",
            "paper-cifar10-r18",
            (0.5,),
            (0.8,),
            {**_PGD, "eps": FIG3_BUDGETS},
            "c",
        )
    )
    return Experiment(
        "fig3",
        "Fig. 3: the gradient conflict μ during training",
        source="Section 3.2, Fig. 3a (data sets and models, PGD) and 3b (training attacks); "
        "3c, caat's: μ against the training budget (Section 3's claim on real runs)",
        shows="CA-AT (γ = 0.8, 0.9) keeps μ below Vanilla AT's (λ = 0.5, 1) throughout training",
        grids=tuple(panels),
        report="mu",
        notes=(
            "T-AutoPGD-DLR trains with caat's apgd-t: 9 target classes, each with the run's "
            "attack steps, so its runs cost about 9× a PGD run's attack",
            "the CIFAR-10 · ResNet-18 PGD panel repeats four runs of fig6a; sweeps are "
            "separate, so they are trained again",
            "fig3c is caat's, not the paper's: μ against the training budget (4, 8, 12 and "
            "16/255; Vanilla AT λ = 0.5, CA-AT γ = 0.8), the median of each epoch's steps "
            "with its quartiles, and the last epoch's median against ε",
        ),
    )


def _fig8() -> Experiment:
    return Experiment(
        "fig8",
        "Fig. 8: training at a larger budget, evaluated across budgets",
        source="Section 5.3, Fig. 8",
        shows="Vanilla AT loses both accuracies when trained at 12/255; CA-AT gains robustness",
        grids=(
            Grid(
                "CIFAR-10 · ResNet-18",
                "paper-cifar10-r18",
                (0.5,),
                (0.8,),
                {"loss": ("ce",), "eps": (8 / 255, 12 / 255)},
            ),
        ),
        evaluations=(EvalRequest(("fgsm", "pgd"), budgets=FIG8_BUDGETS),),
        report="budget",
        notes=(
            "the caption's setting (ResNet-18, 8/255 and 12/255) is followed; the text "
            "says ResNet-34 and 16/255",
            "the attacks are the text's examples, FGSM and PGD; the budgets are Table 1's "
            "plus both training budgets and 4/255 (the paper prints no x-axis values)",
        ),
    )


def _table1() -> Experiment:
    return Experiment(
        "table1",
        "Table 1: six L∞ attacks × four budgets, CA-AT γ = 0.8 against Vanilla AT λ = 0.5",
        source="Section 5.3, Table 1",
        shows="CA-AT is more accurate and more robust at every budget, except FAB above 8/255",
        grids=tuple(
            Grid(title, f"paper-cifar10-{short}", (0.5,), (0.8,), {"loss": ("ce",)})
            for short, title in (("r18", "CIFAR-10 · ResNet-18"), ("r34", "CIFAR-10 · ResNet-34"))
        ),
        evaluations=(EvalRequest(TABLE1_ATTACKS, budgets=TABLE1_BUDGETS),),
        report="table",
        notes=(
            "the paper's table has standard accuracy and six attacks (PGD, AutoPGD, MIFGSM, "
            "FAB, T-FAB, FGSM) at 8, 16, 24 and 32/255, for ResNet-18 and ResNet-34",
        ),
    )


PEFT_LAMBDAS = (0.0, 0.5, 1.0)
"""Vanilla AT's λ in Figs. 4 and 5 (Section 5.2)."""
PEFT_GAMMAS = (0.8, 0.9, 1.0)
"""CA-AT's γ in Figs. 4 and 5 (Section 5.2)."""
_PEFT_EVAL = (EvalRequest(("autoattack", "pgd"), n=0),)
_PEFT_NOTES = (
    "AA is AutoAttack (standard) at the training ε on the whole test set, as for Fig. 6 "
    "(the paper does not name the attack of its AA axis); PGD is measured too",
    "the PEFT hyper-parameters are caat's (the paper's appendix is not available): Hua "
    "et al. 2023's adversarial adapter recipe (RoLI), AdamW; `caat train --preset P "
    "--dry-run` prints each value's source",
)


def _peft(name: str, title: str, model: str, panels: tuple[tuple[str, str], ...]) -> Experiment:
    """A Fig. 4/5 front: adapters on a robust ImageNet model, per data set a panel."""
    return Experiment(
        name,
        title,
        source=f"Section 5.2, Fig. {name.removeprefix('fig')}",
        shows={
            "fig4": "CA-AT's front lies up and to the right of Vanilla AT's when fine-tuning",
            "fig5": "CA-AT still gains over Vanilla AT on ViT, less than on Swin-T",
        }[name],
        grids=tuple(
            Grid(panel, f"paper-peft-{model}-{short}", PEFT_LAMBDAS, PEFT_GAMMAS)
            for short, panel in panels
        ),
        evaluations=_PEFT_EVAL,
        report="front",
        notes=_PEFT_NOTES,
        base_weights={
            "swin-t": "a robust ImageNet Swin-T checkpoint",
            "vit-b16": "a robust ImageNet ViT-B/16 checkpoint",
        }[model],
    )


EXPERIMENTS: Registry[Experiment] = Registry(
    "experiment",
    [
        Experiment(
            "fig2",
            "Fig. 2: the synthetic experiment (μ grows with the budget)",
            source="Section 3.2, Fig. 2",
            shows="μ grows about quadratically with δ on MNIST ones and twos, as Theorem 1 bounds",
            report="synth",
            notes=(
                "runs `caat synth` with Fig. 2's budgets: logistic regression on digits 1 vs 2 "
                "(MNIST at 32×32 when its files are present, else the embedded 8×8 digits), "
                "trained in seconds on the CPU; nothing is stored",
            ),
        ),
        _fig3(),
        _peft(
            "fig4",
            "Fig. 4: adversarial PEFT of Swin-T with adapters (CUB-Bird, Stanford Dogs)",
            "swin-t",
            (("cub", "CUB-200 · Swin-T · adapter"), ("dogs", "Stanford Dogs · Swin-T · adapter")),
        ),
        _peft(
            "fig5",
            "Fig. 5: adversarial PEFT of ViT with adapters (Stanford Dogs)",
            "vit-b16",
            (("dogs", "Stanford Dogs · ViT-B/16 · adapter"),),
        ),
        _front(
            "fig6a",
            "Fig. 6a: SA-AA fronts on CIFAR-10, ResNet-18, cross-entropy",
            "CIFAR-10 · ResNet-18 · CE",
            "paper-cifar10-r18",
            "ce",
            _FIG6_EVAL,
        ),
        _front(
            "fig6b",
            "Fig. 6b: SA-AA fronts on CIFAR-10, ResNet-18, TRADES",
            "CIFAR-10 · ResNet-18 · TRADES",
            "paper-cifar10-r18",
            "trades",
            _FIG6_EVAL,
        ),
        _front(
            "fig6c",
            "Fig. 6c: SA-AA fronts on CIFAR-10, ResNet-18, CLP",
            "CIFAR-10 · ResNet-18 · CLP",
            "paper-cifar10-r18",
            "clp",
            _FIG6_EVAL,
        ),
        _front(
            "fig7a",
            "Fig. 7a: SA-AA fronts on CIFAR-100, ResNet-18, against five attacks",
            "CIFAR-100 · ResNet-18 · CE",
            "paper-cifar100-r18",
            "ce",
            _FIG7_EVAL,
            _FIG7_NOTE,
        ),
        _front(
            "fig7b",
            "Fig. 7b: SA-AA fronts on CIFAR-100, ResNet-34, against five attacks",
            "CIFAR-100 · ResNet-34 · CE",
            "paper-cifar100-r34",
            "ce",
            _FIG7_EVAL,
            _FIG7_NOTE,
        ),
        _fig8(),
        _table1(),
    ],
)
"""Every experiment of the paper, in its order; unavailable ones say why."""
