"""Options the commands share, and a run's options declared once for `train` and `sweep`.

Typer reads a command's parameters from `inspect.signature`, which honours
`__signature__`: `run_options` writes the run options of `RUN_OPTIONS` into a command's
signature, so `train` and `sweep` declare none of them by hand. A sweep takes the
options a sweep may vary (`LIST_KINDS`) as text, a comma list of values. Choices and
their help are read from the registries, never from a copy of their names.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import typer

from caat_app.attacks.registry import NORMS, TRAINING_ATTACKS
from caat_app.data.registry import DATASETS
from caat_app.method.registry import LOSSES, METHODS, OPTIMIZER_HELP, PROJECTIONS
from caat_app.models.registry import BN_MODES, MODELS, PEFT_MODES, TRANSFORMERS
from caat_app.presets import PRESETS
from caat_app.registry import one_of
from caat_app.runs.grid import LIST_KINDS
from caat_app.training.schedule import SCHEDULE_HELP

DbOption = typer.Option(
    None, "--db", help="store: SQLAlchemy URL or SQLite file path (default: $CAAT_DB, $CAAT_HOME)"
)
PerGpuOption = typer.Option(1, "--per-gpu", min=1, help="dashboard: runs at once per GPU")
MaxCpuOption = typer.Option(1, "--max-cpu", min=1, help="dashboard: CPU runs at once")
JsonOption = typer.Option(False, "--json", help="machine-readable output")

ID_LIMIT = 2**63
"""Ids and counts the store holds: SQLite's INTEGER (PostgreSQL's BIGINT) is signed 64-bit."""


def _too_big(digits: str) -> bool:
    """Whether an all-digit text is 2**63 or more (compared by length first: Python
    refuses `int()` of over 4300 digits)."""
    digits = digits.lstrip("0")
    return len(digits) > len(str(ID_LIMIT)) or (digits != "" and int(digits) >= ID_LIMIT)


def check_run_refs(refs: str | list[str] | None) -> str | list[str] | None:
    """Run references as given, or a usage error for an id no store can hold.

    An all-digit reference is an id (`Store.find_run`), so one of 2**63 or more is
    refused here, before the store's driver overflows on it.
    """
    for ref in [refs] if isinstance(refs, str) else refs or []:
        if ref.isascii() and ref.isdigit() and _too_big(ref):
            shown = ref if len(ref) <= 24 else f"{ref[:20]}… ({len(ref)} digits)"
            raise typer.BadParameter(f"a run id is below 2**63, got {shown}")
    return refs


def check_int64(value: int | None) -> int | None:
    """An integer option the store can hold (ids, counts), or a usage error."""
    if value is not None and not -ID_LIMIT <= value < ID_LIMIT:
        raise typer.BadParameter("must be below 2**63")
    return value


RunArgument = typer.Argument(..., help="run id or name", callback=check_run_refs)

RunCommand = Literal["train", "sweep"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RunOption:
    """One option of a run: its RunConfig field, the type `train` reads, its help.

    `example` is a comma list shown in a sweep's help; `flag` spells a boolean's two
    switches; `only` keeps an option to one command (a run's name, a sweep's seeds).
    """

    name: str
    value_type: type
    help: str | None = None
    example: str = ""
    flag: str = ""
    only: RunCommand | None = None

    def parameter(self, command: RunCommand) -> inspect.Parameter:
        """The option as a keyword parameter of `command` (None: not given)."""
        swept = command == "sweep" and self.name in LIST_KINDS
        help_text = self.list_help() if swept else self.help
        decls = [self.flag] if self.flag else []
        return inspect.Parameter(
            self.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, *decls, help=help_text),
            annotation=(str if swept else self.value_type) | None,
        )

    def list_help(self) -> str:
        """The help of a sweep's option, which takes a comma list of values too."""
        if not self.help:
            return "one value or a comma list"
        return f"{self.help}; or a list" + (f": {self.example}" if self.example else "")


def _datasets() -> str:
    return ", ".join(n + ("" if d.source else " (embedded)") for n, d in DATASETS.items())


def _beta_help() -> str:
    weights = ", ".join(f"{n} {loss.beta:g}" for n, loss in LOSSES.items() if loss.beta)
    return f"weight of the loss's extra term (default: {weights})"


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption(
        "method", str, f"{one_of(METHODS)} (Vanilla AT: weight --lam; CA-AT: threshold --gamma)"
    ),
    RunOption("lam", float, "Vanilla AT: weight λ of the adversarial loss", "0,0.25,0.5"),
    RunOption("gamma", float, "CA-AT: cosine threshold γ in (-1, 1]", "0.7,0.8,0.9"),
    RunOption("projection", str, f"{one_of(PROJECTIONS)} (the paper: {PROJECTIONS[0]})"),
    RunOption("dataset", str, f"data set: {_datasets()}"),
    RunOption("model", str, f"model: {MODELS.choices()}", ",".join(MODELS.names[:2])),
    RunOption("bn", str, f"BatchNorm: {one_of(BN_MODES)}"),
    RunOption("weights", str, "a transformer's base weights: a safetensors file or a state dict"),
    RunOption(
        "peft",
        str,
        f"what trains: {one_of(PEFT_MODES)} (all but full: transformers, the new head too)",
        "adapter,lora",
    ),
    RunOption("adapter_reduction", int, "bottleneck adapter: the block's width ÷ this", "8,16"),
    RunOption("lora_rank", int, "LoRA's rank", "4,8"),
    RunOption(
        "grad_checkpointing",
        bool,
        f"recompute activations in the backward pass ({', '.join(TRANSFORMERS)})",
        flag="--grad-checkpointing/--no-grad-checkpointing",
    ),
    RunOption("loss", str, f"adversarial loss: {LOSSES.choices()}", ",".join(LOSSES.names[:2])),
    RunOption("beta", float, _beta_help()),
    RunOption("attack", str, f"training attack: {', '.join(TRAINING_ATTACKS)}"),
    RunOption("norm", str, f"budget norm: {one_of(NORMS)}"),
    RunOption("eps", str, "budget ε, e.g. 0.3 or 8/255", "8/255,16/255"),
    RunOption("alpha", str, "attack step (default ε/4), e.g. 2/255"),
    RunOption("attack_steps", int, "PGD steps while training"),
    RunOption("eval_steps", int, "PGD steps of the per-epoch evaluation"),
    RunOption("epochs", int),
    RunOption("batch_size", int),
    RunOption("lr", float, "peak learning rate of the schedule"),
    RunOption("schedule", str, "; ".join(f"{k}: {v}" for k, v in SCHEDULE_HELP.items())),
    RunOption("optimizer", str, "; ".join(f"{k}: {v}" for k, v in OPTIMIZER_HELP.items())),
    RunOption("momentum", float, "SGD's momentum, AdamW's β₁ (cosinew cycles its own)"),
    RunOption("nesterov", bool, "Nesterov momentum", flag="--nesterov/--no-nesterov"),
    RunOption("weight_decay", float),
    RunOption("seed", int, "random seed", "0,1,2"),
    RunOption("seeds", str, "the seeds of each config: 0,1,2", only="sweep"),
    RunOption("device", str, "auto, cpu, cuda or cuda:N"),
    RunOption(
        "gpus", int, "processes (GPUs) one run trains on, data parallel; the batch is global"
    ),
    RunOption("bf16", bool, "bf16 autocast (CUDA)", flag="--bf16/--no-bf16"),
    RunOption(
        "compile",
        bool,
        "torch.compile the model (the first steps compile; then faster on a GPU)",
        flag="--compile/--no-compile",
    ),
    RunOption("augment", bool, flag="--augment/--no-augment"),
    RunOption(
        "image_size",
        int,
        f"image side in pixels: {', '.join(n for n, d in DATASETS.items() if d.image_size)} "
        "decode their files at it (default 224), the others are resampled (bilinear) to it",
    ),
    RunOption("eval_n", int, "val/test images evaluated per epoch (0: all)"),
    RunOption("max_nonfinite", int, "skipped steps before `diverged`"),
    RunOption("layer_stats", int, "per-layer φ and μ every N steps, e.g. 20 (0: off)"),
    RunOption("drop", str, "training-split indices to leave out, e.g. 3,17,42 (an ablation)"),
    RunOption(
        "labels",
        str,
        "the data set's classes to keep, relabelled 0..k-1 in this order: 5,6,7,8,9 "
        "(a held-out task)",
    ),
    RunOption("log_every", int, "steps between metric copies"),
    RunOption(
        "checkpoint_every",
        float,
        "minutes between resume checkpoints inside an epoch (0: after each epoch only)",
    ),
    RunOption("data_dir", str, "data set folder (default $CAAT_DATA)"),
    RunOption("download", bool, flag="--download/--no-download"),
    RunOption("preset", str, f"a recipe ({PRESETS.choices()}); options override it"),
    RunOption("name", str, "run name", only="train"),
)


def run_options(command: RunCommand, *, lead: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Give a `**run` command the run options: after its `lead` parameters, before the rest.

    The command is called with the options in the table's order whatever order the
    command line gave them in (click's), so a message listing them reads the same.
    """

    def decorate(function: F) -> F:
        own = [
            p
            for p in inspect.signature(function, eval_str=True).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        options = [o.parameter(command) for o in RUN_OPTIONS if o.only in (None, command)]
        first = [p for p in own if p.name in lead]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.name not in lead]
        signature = inspect.Signature(
            [*first, *options, *rest], return_annotation=inspect.Signature.empty
        )
        order = list(signature.parameters)

        @functools.wraps(function)
        def call(**given: Any) -> Any:
            return function(**{name: given[name] for name in order if name in given})

        call.__signature__ = signature  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate
