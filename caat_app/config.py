"""A run's configuration: validated once, before anything is stored or trained.

Torch-free on purpose: the CLI's non-training commands and the dashboard import it.
Precedence when a run is assembled: field defaults < data set defaults < preset <
config file < options given on the command line.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from caat_app.attacks.registry import NORMS, TRAINING_ATTACKS, objective_complaint
from caat_app.data.registry import DATASETS
from caat_app.errors import ConfigError
from caat_app.method.registry import DEFAULT_BETA, LOSSES, METHODS, OPTIMIZERS, PROJECTIONS
from caat_app.models.registry import BN_MODES, MODELS, PEFT_MODES, transformer_complaint
from caat_app.present import format_budget, parse_budget, visible
from caat_app.presets import PRESETS
from caat_app.training.schedule import SCHEDULES
from caat_storage import check_name

# Each choice field accepts exactly its registry's names (pydantic lists them on a typo).
Method = Literal[METHODS]  # type: ignore[valid-type]
Projection = Literal[PROJECTIONS]  # type: ignore[valid-type]
DatasetName = Literal[DATASETS.names]  # type: ignore[valid-type]
ModelName = Literal[MODELS.names]  # type: ignore[valid-type]
BnMode = Literal[BN_MODES]  # type: ignore[valid-type]
PeftMode = Literal[PEFT_MODES]  # type: ignore[valid-type]
LossName = Literal[LOSSES.names]  # type: ignore[valid-type]
AttackName = Literal[TRAINING_ATTACKS]  # type: ignore[valid-type]
Norm = Literal[NORMS]  # type: ignore[valid-type]
Schedule = Literal[SCHEDULES]  # type: ignore[valid-type]
Optimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]


Budget = Annotated[float, BeforeValidator(parse_budget)]

INT64_LIMIT = 2**63
"""The store keeps integers as SQLite's INTEGER (PostgreSQL's BIGINT): signed 64 bits."""


def _fits_64_bits(value: int) -> int:
    """A count or seed the store (and torch's generators) can hold, or a ValueError."""
    if not -INT64_LIMIT <= value < INT64_LIMIT:
        raise ValueError("must be below 2**63")
    return value


Int64 = Annotated[int, AfterValidator(_fits_64_bits)]


def _parse_indices(value: Any) -> Any:
    """`3,17,42` (the command line's form) → (3, 17, 42); sequences pass through."""
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
        try:
            return tuple(int(item) for item in items)
        except ValueError:
            raise ValueError(f"expected indices like 3,17,42, got {value!r}") from None
    return value


Indices = Annotated[tuple[Annotated[Int64, Field(ge=0)], ...], BeforeValidator(_parse_indices)]
Labels = Annotated[
    tuple[Annotated[Int64, Field(ge=0)], ...] | None, BeforeValidator(_parse_indices)
]


class RunConfig(BaseModel):
    """Everything a training run needs; the worker rebuilds it from the stored JSON."""

    # No inf anywhere (NaN already fails every bound): a run of lr=inf only diverges.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str | None = Field(None, max_length=200)
    method: Method = "caat"
    lam: float = Field(0.5, ge=0.0, le=1.0, description="Vanilla AT weight on g_a")
    gamma: float = Field(0.8, gt=-1.0, le=1.0, description="CA-AT cosine threshold")
    projection: Projection = "global"
    dataset: DatasetName = "digits"
    model: ModelName = "cnn"
    bn: BnMode = "standard"
    weights: str | None = Field(
        None, description="a transformer's base weights: safetensors or a state dict"
    )
    peft: PeftMode = Field("full", description="what trains: full, head, adapter or lora")
    adapter_reduction: Int64 = Field(16, ge=1, description="bottleneck adapter: width ÷ this")
    lora_rank: Int64 = Field(8, ge=1)
    grad_checkpointing: bool = False
    loss: LossName = "ce"
    beta: float | None = Field(None, ge=0.0, description="TRADES KL / CLP pairing weight")
    attack: AttackName = "pgd"
    norm: Norm = "linf"
    eps: Budget = Field(0.3, ge=0.0)
    alpha: Budget | None = Field(None, gt=0.0, description="attack step; default eps/4")
    attack_steps: Int64 = Field(10, ge=1)
    eval_steps: Int64 = Field(10, ge=1, description="PGD steps of the per-epoch evaluation")
    epochs: Int64 = Field(15, ge=1)
    batch_size: Int64 = Field(128, ge=1)
    lr: float = Field(0.2, gt=0.0)
    schedule: Schedule = "linear"
    optimizer: Optimizer = "sgd"
    momentum: float = Field(
        0.9, ge=0.0, lt=1.0, description="SGD's momentum, AdamW's β₁; `cosinew` cycles it"
    )
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0.0)
    seed: Int64 = Field(0, ge=0)
    device: str = "auto"
    gpus: Int64 = Field(
        1, ge=1, le=1024, description="processes one run trains on, data parallel (GPUs on CUDA)"
    )
    bf16: bool = False
    compile: bool = Field(False, description="torch.compile the model (its first steps compile)")
    augment: bool | None = Field(None, description="None: the data set's default")
    image_size: int | None = Field(
        None, ge=8, le=1024, description="image side in pixels; None: the data set's own"
    )
    eval_n: Int64 = Field(0, ge=0, description="validation/test images per epoch; 0 = all")
    max_nonfinite: Int64 = Field(10, ge=0, description="skipped steps before a run diverges")
    layer_stats: Int64 = Field(0, ge=0, description="per-layer φ and μ every N steps; 0 = off")
    drop: Indices = Field((), description="training-split images left out (an ablation)")
    labels: Labels = Field(
        None, description="the data set's classes kept, relabelled 0..k-1 in this order"
    )
    log_every: Int64 = Field(20, ge=1)
    checkpoint_every: float = Field(
        0.0, ge=0.0, description="minutes between resume checkpoints inside an epoch; 0 = per epoch"
    )
    data_dir: str | None = None
    download: bool = True
    preset: str | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A new run's name by the store's rule (one table line); a stored one as it is."""
        if value is None or (info.context or {}).get("stored"):
            return value
        return check_name(value)

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A new run's weights file exists, named by its absolute path (the worker's
        folder is another); a stored one is taken as stored (checked when built)."""
        if value is None or (info.context or {}).get("stored"):
            return value
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"no such file {visible(value)}")
        return str(path.resolve())

    @model_validator(mode="after")
    def _check_transformer_fields(self) -> RunConfig:
        """Weights files, PEFT, grad checkpointing: transformers only; and no BatchNorm mode."""
        if MODELS[self.model].transformer:
            if self.bn != "standard":
                raise ValueError(f"bn: {self.model} has no BatchNorm; leave bn at standard")
            return self
        for field, given in (
            ("weights", self.weights is not None),
            ("peft", self.peft != "full"),
            ("grad_checkpointing", self.grad_checkpointing),
        ):
            if given:
                raise ValueError(transformer_complaint(field, self.model))
        return self

    @model_validator(mode="after")
    def _check_gpus(self) -> RunConfig:
        if self.batch_size % self.gpus:
            raise ValueError(
                f"gpus: the batch of {self.batch_size} must split evenly over {self.gpus} ranks"
            )
        return self

    @model_validator(mode="after")
    def _check_nesterov(self) -> RunConfig:
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError(f"nesterov: SGD only; {self.optimizer} has no Nesterov variant here")
        return self

    @model_validator(mode="after")
    def _check_labels(self) -> RunConfig:
        """A held-out task: at least two distinct classes the data set has."""
        if self.labels is None:
            return self
        classes = DATASETS[self.dataset].classes  # 0: as many as its files have
        if len(self.labels) < 2:
            raise ValueError("labels: keep at least two classes, e.g. 5,6,7,8,9")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels: each class once, got {_cli_value('labels', self.labels)}")
        if classes and max(self.labels) >= classes:
            raise ValueError(f"labels: {self.dataset} has classes 0 to {classes - 1}")
        return self

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_attack_objective(self) -> RunConfig:
        complaint = objective_complaint(self.attack) if LOSSES[self.loss].objective else None
        if complaint:
            raise ValueError(f"attack: {complaint}")
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
    shown = visible(str(path))
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {shown}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {shown} is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start}); TOML is UTF-8"
        ) from None
    except ValueError as exc:  # TOMLDecodeError, or an integer of over 4300 digits
        raise ConfigError(f"config file {shown} is not valid TOML: {exc}") from None
    return {key.replace("-", "_"): value for key, value in raw.items()}


def resolve_config(
    options: dict[str, Any] | None = None, file_values: dict[str, Any] | None = None
) -> tuple[RunConfig, dict[str, str]]:
    """The merged config and, per field, where its value came from; raise ConfigError.

    Precedence: field defaults < data set defaults < preset < file < options. A preset's
    value names the preset and its own source (a paper section or an official file).
    """
    options = {k: v for k, v in (options or {}).items() if v is not None}
    file_values = dict(file_values or {})
    preset_name = options.get("preset", file_values.get("preset"))
    layers: list[tuple[dict[str, Any], Callable[[str], str]]] = []
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise ConfigError(
                f"preset: unknown {preset_name!r}; choose one of {', '.join(sorted(PRESETS))}"
            )
        preset = PRESETS[preset_name]
        layers.append((dict(preset.values), lambda k: f"preset {preset_name}: {preset.sources[k]}"))
    layers += [(file_values, lambda k: "config file"), (options, lambda k: "option")]
    chosen = {k: v for values, _ in layers for k, v in values.items()}
    dataset = chosen.get("dataset", "digits")
    data_defaults = dict(DATASETS[dataset].defaults) if dataset in DATASETS else {}
    layers.insert(0, (data_defaults, lambda k: f"data set {dataset}"))
    merged = {**data_defaults, **chosen}
    try:
        cfg = RunConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    origins = dict.fromkeys(FIELDS, "default")
    for values, origin in layers:
        origins.update({k: origin(k) for k in values if k in origins})
    return cfg, origins


def build_config(
    options: dict[str, Any] | None = None, file_values: dict[str, Any] | None = None
) -> RunConfig:
    """Merge defaults, data set defaults, preset, file and options; raise ConfigError."""
    return resolve_config(options, file_values)[0]


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


def _cli_value(name: str, value: Any) -> str:
    """Budgets read best as k/255; other floats keep every digit."""
    if name in {"eps", "alpha"}:
        return format_budget(value, exact=True)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def command_line(cfg: RunConfig) -> str:
    """The `caat train` call that recreates `cfg`: only what differs from the defaults."""
    base = build_config({"dataset": cfg.dataset})
    parts = ["caat", "train"]
    for name in FIELDS:
        value = getattr(cfg, name)
        if (value == getattr(base, name) and name != "dataset") or value in (None, ()):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            parts += [flag, shlex.quote(_cli_value(name, value))]
    return " ".join(parts)


def config_from_json(data: dict[str, Any]) -> RunConfig:
    """Rebuild a stored config (the worker's side of the store).

    Its name is taken as stored: an older build let control characters into names, and
    such a run must still train and evaluate (the tables show the name escaped).
    """
    try:
        return RunConfig.model_validate(data, context={"stored": True})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
