"""A run's configuration: validated once, before anything is stored or trained.

Torch-free on purpose: the CLI's non-training commands and the dashboard import it.
Precedence when a run is assembled: field defaults < data set defaults < preset <
config file < options given on the command line.
"""

from __future__ import annotations

import math
import re
import shlex
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from caat_app.errors import CaatError

METHODS = ("vanilla", "caat")
PROJECTIONS = ("global", "layer")
DATASETS = ("digits", "mnist", "cifar10", "cifar100")
MODELS = ("linear", "cnn", "resnet18", "resnet34", "wrn28-10")
BN_MODES = ("standard", "batchstats")
LOSSES = ("ce", "trades", "clp")
ATTACKS = ("pgd", "fgsm", "mifgsm", "apgd-ce", "apgd-dlr", "apgd-t")
NORMS = ("linf", "l2")
NORM_TEXT = {"linf": "L∞", "l2": "L2"}  # as a norm is written for people
DEFAULT_BETA = {"ce": 0.0, "trades": 6.0, "clp": 0.5}

# Budgets at which the trade-off shows: 0.3 on the [0, 1] pixel scale for digit images,
# the paper's 8/255 for CIFAR.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"eps": 0.3},
    "mnist": {"eps": 0.3},
    "cifar10": {"eps": 8 / 255, "alpha": 2 / 255},
    "cifar100": {"eps": 8 / 255, "alpha": 2 / 255},
}

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
PRESETS: dict[str, dict[str, Any]] = {
    f"paper-{ds}-{short}": {**_PAPER, "dataset": ds, "model": model}
    for ds in ("cifar10", "cifar100")
    for short, model in (("r18", "resnet18"), ("r34", "resnet34"), ("wrn28-10", "wrn28-10"))
}


class ConfigError(CaatError, ValueError):
    """A bad configuration, explained in one line."""


_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$", re.I)


def parse_budget(value: Any) -> float:
    """`8/255`, `0.03` or a number → a finite float (the sign is checked by the field)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number or a fraction like 8/255, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _FRACTION.match(text)
        try:
            number = float(match[1]) / float(match[2]) if match else float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"expected a number or a fraction like 8/255, got {value!r}") from None
    else:
        raise ValueError(f"expected a number or a fraction like 8/255, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"must be finite, got {value!r}")
    return number


Budget = Annotated[float, BeforeValidator(parse_budget)]


class RunConfig(BaseModel):
    """Everything a training run needs; the worker rebuilds it from the stored JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, max_length=200)
    method: Literal["vanilla", "caat"] = "caat"
    lam: float = Field(0.5, ge=0.0, le=1.0, description="Vanilla AT weight on g_a")
    gamma: float = Field(0.8, gt=-1.0, le=1.0, description="CA-AT cosine threshold")
    projection: Literal["global", "layer"] = "global"
    dataset: Literal["digits", "mnist", "cifar10", "cifar100"] = "digits"
    model: Literal["linear", "cnn", "resnet18", "resnet34", "wrn28-10"] = "cnn"
    bn: Literal["standard", "batchstats"] = "standard"
    loss: Literal["ce", "trades", "clp"] = "ce"
    beta: float | None = Field(None, ge=0.0, description="TRADES KL / CLP pairing weight")
    attack: Literal["pgd", "fgsm", "mifgsm", "apgd-ce", "apgd-dlr", "apgd-t"] = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    eps: Budget = Field(0.3, ge=0.0)
    alpha: Budget | None = Field(None, gt=0.0, description="attack step; default eps/4")
    attack_steps: int = Field(10, ge=1)
    eval_steps: int = Field(10, ge=1, description="PGD steps of the per-epoch evaluation")
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.2, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    seed: int = Field(0, ge=0)
    device: str = "auto"
    bf16: bool = False
    augment: bool | None = Field(None, description="None: the data set's default")
    eval_n: int = Field(0, ge=0, description="validation/test images per epoch; 0 = all")
    max_nonfinite: int = Field(10, ge=0, description="skipped steps before a run diverges")
    log_every: int = Field(20, ge=1)
    data_dir: str | None = None
    download: bool = True
    preset: str | None = None

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_attack_objective(self) -> RunConfig:
        if self.loss == "trades" and self.attack.startswith("apgd"):
            raise ValueError(
                f"attack: {self.attack} brings its own objective; TRADES needs pgd, fgsm "
                "or mifgsm (they ascend the TRADES KL)"
            )
        return self

    @model_validator(mode="after")
    def _check_preset(self) -> RunConfig:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(
                f"unknown preset {self.preset!r}; choose one of {', '.join(sorted(PRESETS))}"
            )
        return self

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else self.eps / 4

    @property
    def loss_beta(self) -> float:
        return self.beta if self.beta is not None else DEFAULT_BETA[self.loss]

    @property
    def param(self) -> float:
        """The method's trade-off parameter: γ for CA-AT, λ for Vanilla AT."""
        return self.gamma if self.method == "caat" else self.lam

    @property
    def label(self) -> str:
        return f"caat γ={self.gamma:g}" if self.method == "caat" else f"vanilla λ={self.lam:g}"

    def default_name(self) -> str:
        return self.name or f"{self.dataset}-{self.model}-{self.method}-{self.param:g}"


FIELDS = tuple(RunConfig.model_fields)


def _complaints(error: ValidationError) -> dict[str, str]:
    """Field → message, one per field (the first complaint about it)."""
    found: dict[str, str] = {}
    for err in error.errors():
        where = ".".join(str(x) for x in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown option; known: {', '.join(FIELDS)}"
        field, _, rest = msg.partition(": ")
        if where == "config" and field in FIELDS:  # a check across fields names its field
            where, msg = field, rest
        found.setdefault(where, msg)
    return found


def _describe(error: ValidationError) -> str:
    """All of a ValidationError's complaints on one line, naming the field."""
    return "; ".join(f"{field}: {msg}" for field, msg in _complaints(error).items())


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML file of RunConfig fields (dashes or underscores), as a plain dict."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return {key.replace("-", "_"): value for key, value in raw.items()}


def build_config(
    options: dict[str, Any] | None = None, file_values: dict[str, Any] | None = None
) -> RunConfig:
    """Merge defaults, data set defaults, preset, file and options; raise ConfigError."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    file_values = dict(file_values or {})
    preset_name = options.get("preset", file_values.get("preset"))
    preset: dict[str, Any] = {}
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise ConfigError(
                f"preset: unknown {preset_name!r}; choose one of {', '.join(sorted(PRESETS))}"
            )
        preset = PRESETS[preset_name]
    chosen = {**preset, **file_values, **options}
    dataset = chosen.get("dataset", "digits")
    merged = {**DATASET_DEFAULTS.get(dataset, {}), **chosen}
    try:
        return RunConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def field_errors(options: dict[str, Any]) -> dict[str, str]:
    """What is wrong with each field of a form, by the same rules as the CLI ({} if valid)."""
    try:
        build_config(options)
    except ConfigError as exc:
        cause = exc.__context__
        if isinstance(cause, ValidationError):
            return _complaints(cause)
        return {"preset": str(exc).removeprefix("preset: ")}
    return {}


def format_budget(eps: float, *, exact: bool = False) -> str:
    """A budget as people write it: `8/255` on the 8-bit pixel grid, else the number.

    A short decimal stays one (0.2 is also 51/255, but nobody writes it so).
    `exact` keeps every digit off the grid (a command line must rebuild the same float).
    """
    k = round(eps * 255)
    short = abs(eps - round(eps, 2)) < 1e-12
    if not short and 0 < k < 255 and abs(eps * 255 - k) < (1e-9 if exact else 1e-6):
        return f"{k}/255"
    return repr(eps) if exact else f"{eps:g}"


def _cli_value(name: str, value: Any) -> str:
    """Budgets read best as k/255; other floats keep every digit."""
    if name in {"eps", "alpha"}:
        return format_budget(value, exact=True)
    return repr(value) if isinstance(value, float) else str(value)


def command_line(cfg: RunConfig) -> str:
    """The `caat train` call that recreates `cfg`: only what differs from the defaults."""
    base = build_config({"dataset": cfg.dataset})
    parts = ["caat", "train"]
    for name in FIELDS:
        value = getattr(cfg, name)
        if (value == getattr(base, name) and name != "dataset") or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            parts += [flag, shlex.quote(_cli_value(name, value))]
    return " ".join(parts)


def config_from_json(data: dict[str, Any]) -> RunConfig:
    """Rebuild a stored config (the worker's side of the store)."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
