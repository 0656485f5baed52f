"""The launch form: every field of a run's config, checked as the person types."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, Switch

from caat_app.attacks.registry import NORMS, TRAINING_ATTACKS
from caat_app.config import ConfigError, build_config, command_line, field_errors
from caat_app.data.registry import DATASETS
from caat_app.method.registry import LOSSES, METHODS, OPTIMIZERS, PROJECTIONS
from caat_app.models.registry import BN_MODES, MODELS, PEFT_MODES
from caat_app.presets import PRESETS
from caat_app.training.schedule import SCHEDULES

from .calls import call_service
from .keys import Key

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_app.runs.launcher import Gpu
    from caat_app.runs.service import Workbench


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    choices: tuple[str, ...] | None = None  # a Select
    switch: bool = False  # a Switch
    hint: str = ""


FIELDS = [
    Field(
        "sweep",
        "sweep name",
        hint="empty: one run; a name queues a grid: comma lists in method, λ, γ, ε, seed, …",
    ),
    Field("preset", "preset", hint="fills the form with a paper recipe; edit it after"),
    Field("name", "name", hint="empty: a name is made from the config"),
    Field("method", "method", METHODS),
    Field("gamma", "γ (CA-AT threshold)", hint="in (-1, 1]"),
    Field("lam", "λ (Vanilla AT weight)", hint="in [0, 1]"),
    Field("projection", "projection", PROJECTIONS),
    Field("dataset", "data set", DATASETS.names),
    Field("model", "model", MODELS.names),
    Field("peft", "fine-tuning (PEFT)", PEFT_MODES, hint="what trains; full: everything"),
    Field("weights", "base weights file", hint="empty: random; safetensors or a state dict"),
    Field("adapter_reduction", "adapter reduction", hint="bottleneck width = width ÷ this"),
    Field("lora_rank", "LoRA rank"),
    Field("grad_checkpointing", "grad checkpointing", switch=True),
    Field("image_size", "image size", hint="empty: the data set's own (224 for CUB, Dogs)"),
    Field("bn", "BatchNorm", BN_MODES),
    Field("loss", "adversarial loss", LOSSES.names),
    Field(
        "beta",
        "β (loss weight)",
        hint="empty: " + ", ".join(f"{n} {v.beta:g}" for n, v in LOSSES.items() if v.beta),
    ),
    Field("attack", "attack", TRAINING_ATTACKS),
    Field("norm", "norm", NORMS),
    Field("eps", "ε", hint="a number or a fraction like 8/255"),
    Field("alpha", "attack step", hint="empty: ε/4"),
    Field("attack_steps", "attack steps"),
    Field("eval_steps", "eval PGD steps"),
    Field("epochs", "epochs"),
    Field("batch_size", "batch size"),
    Field("lr", "peak learning rate"),
    Field("schedule", "schedule", SCHEDULES),
    Field("optimizer", "optimizer", OPTIMIZERS),
    Field("momentum", "momentum (AdamW: β₁)", hint="cosinew cycles its own"),
    Field("nesterov", "Nesterov momentum", switch=True),
    Field("weight_decay", "weight decay"),
    Field("seed", "seed"),
    Field("device", "device"),
    Field("gpus", "GPUs (data parallel)", hint="the batch is split over them"),
    Field("bf16", "bf16 autocast (CUDA)", switch=True),
    Field("compile", "torch.compile", switch=True),
    Field("augment", "augmentation"),
    Field("eval_n", "eval images (0: all)"),
    Field("max_nonfinite", "skips before diverged"),
    Field("log_every", "steps per metric copy"),
    Field("data_dir", "data folder", hint="empty: $CAAT_DATA or $CAAT_HOME/data"),
    Field("download", "download if missing", switch=True),
]
_AUGMENT = {"default": None, "on": True, "off": False}
TRANSFORMER_FIELDS = ("peft", "weights", "adapter_reduction", "lora_rank", "grad_checkpointing")
"""Shown (and sent) only for a transformer model, as its registry entry says; the image
size too, unless it holds a value (it also resamples the CNNs' data sets)."""
PEFT_FIELDS = {"adapter_reduction": "adapter", "lora_rank": "lora"}
"""Fields that matter to one PEFT mode only: shown for that mode."""


@dataclass(frozen=True)
class Launched:
    """What the form queued: one run (to monitor) or a sweep (to filter the table by)."""

    run_id: int | None = None
    sweep: str | None = None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


class LaunchScreen(Screen[Launched]):
    """Submitting records the run as queued and starts a worker when there is room."""

    BINDINGS = [
        Key("ctrl+s", "launch", "Launch", title="Launch", tooltip="Queue the run (or the sweep)"),
        Key("escape", "app.pop_screen", "Back", tooltip="back, queueing nothing"),
    ]

    def __init__(
        self, bench: Workbench, values: dict[str, Any] | None = None, *, gpus: list[Gpu]
    ) -> None:
        super().__init__()
        self.bench = bench
        defaults = build_config({"device": "auto" if gpus else "cpu"})
        self.initial = defaults.model_dump() | dict(values or {})
        self.initial["preset"] = None  # a re-launched config is already complete
        self.initial["sweep"] = None
        self.dataset = str(self.initial["dataset"])
        self.gpus = gpus

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form"):
            for field in FIELDS:
                with Horizontal(classes="field", id=f"row-{field.name}"):
                    yield Label(field.label, classes="field-label")
                    with Vertical(classes="field-input"):
                        yield self._widget(field)
                        yield Static(Text(field.hint), classes="hint", id=f"err-{field.name}")
        yield Static("", id="preview")
        with Horizontal(classes="buttons"):
            yield Button("Launch", variant="primary", id="launch")
            yield Button("Back", id="back")
        yield Footer()

    def _widget(self, field: Field) -> Any:
        value = self.initial.get(field.name)
        wid = f"f-{field.name}"
        if field.switch:
            return Switch(bool(value), id=wid)
        if field.name == "device":
            options = [("auto (CUDA when present)", "auto"), ("cpu", "cpu")]
            options += [(f"cuda:{g.index} {g.name}", f"cuda:{g.index}") for g in self.gpus]
            known = {v for _, v in options}
            if value not in known:
                options.append((str(value), str(value)))
            return Select(options, value=value, allow_blank=False, id=wid, compact=True)
        if field.name == "preset":
            options = [("none", "")] + [(name, name) for name in sorted(PRESETS)]
            return Select(options, value="", allow_blank=False, id=wid, compact=True)
        if field.name == "augment":
            options = [("data set default", "default"), ("on", "on"), ("off", "off")]
            choice = next(k for k, v in _AUGMENT.items() if v == value)
            return Select(options, value=choice, allow_blank=False, id=wid, compact=True)
        if field.choices:
            options = [(c, c) for c in field.choices]
            if field.name == "method":
                options.append(("both (a sweep: λ list and γ list)", "vanilla,caat"))
            return Select(options, value=value, allow_blank=False, id=wid, compact=True)
        return Input(_text(value), id=wid, compact=True)

    def on_mount(self) -> None:
        self.validate()
        self.query_one("#f-name", Input).focus()

    def values(self) -> dict[str, Any]:
        """The form as options for `build_config`; an empty text box means the default."""
        out: dict[str, Any] = {}
        hidden = self.hidden_fields()
        for field in FIELDS:
            widget = self.query_one(f"#f-{field.name}")
            if field.name == "sweep" or field.name in hidden:
                continue
            if field.name == "preset":
                if widget.value:  # type: ignore[attr-defined]
                    out["preset"] = widget.value  # type: ignore[attr-defined]
            elif field.name == "augment":
                out["augment"] = _AUGMENT[widget.value]  # type: ignore[attr-defined]
            elif isinstance(widget, Switch | Select):
                out[field.name] = widget.value
            elif isinstance(widget, Input):
                text = widget.value.strip()
                if text:
                    out[field.name] = text
        return out

    def hidden_fields(self) -> set[str]:
        """The model's fields that do not apply: PEFT for a CNN, LoRA's rank to adapters."""
        model = self.query_one("#f-model", Select).value
        if model in MODELS.names and MODELS[str(model)].transformer:
            peft = self.query_one("#f-peft", Select).value
            return {name for name, mode in PEFT_FIELDS.items() if mode != peft}
        hidden = set(TRANSFORMER_FIELDS)
        if not self.query_one("#f-image_size", Input).value.strip():
            hidden.add("image_size")
        return hidden

    @property
    def sweep_name(self) -> str:
        return self.query_one("#f-sweep", Input).value.strip()

    def grid(self) -> list[Any]:
        """The sweep's configs, named; a one-line ConfigError names what is wrong."""
        from caat_app.runs.sweep import expand, name_runs, sweep_options

        base, lists, seeds = sweep_options(self.values(), {}, None)
        return name_runs(self.sweep_name, expand(base, lists, seeds))

    def _sweep_errors(self) -> tuple[dict[str, str], str]:
        """Per-field errors of a grid, and the preview line (the run count)."""
        try:
            configs = self.grid()
        except ConfigError as exc:
            field, _, message = str(exc).partition(": ")
            field = field.removeprefix("--").replace("-", "_")
            known = {f.name for f in FIELDS}
            return ({field: message} if field in known else {"sweep": str(exc)}), ""
        methods = sorted({c.method for c in configs})
        return {}, f"sweep {self.sweep_name}: {len(configs)} runs ({', '.join(methods)})"

    def validate(self) -> dict[str, str]:
        values = self.values()
        if self.sweep_name:
            errors, summary = self._sweep_errors()
        else:
            errors, summary = field_errors(values), ""
        method = str(values.get("method", "caat"))
        self.query_one("#row-gamma").display = "caat" in method
        self.query_one("#row-lam").display = "vanilla" in method
        hidden = self.hidden_fields()
        for name in (*TRANSFORMER_FIELDS, "image_size"):
            self.query_one(f"#row-{name}").display = name not in hidden
        for field in FIELDS:
            note = self.query_one(f"#err-{field.name}", Static)
            message = errors.get(field.name)
            note.update(Text(message or field.hint))
            note.set_class(message is not None, "error")
            note.display = bool(message or field.hint)
            self.query_one(f"#f-{field.name}").set_class(message is not None, "invalid")
        preview = self.query_one("#preview", Static)
        if errors:
            others = {k: v for k, v in errors.items() if k not in {f.name for f in FIELDS}}
            text = "fix the fields marked in red" + "".join(
                f"; {k}: {v}" for k, v in others.items()
            )
            preview.update(Text(text, style="bold red"))
        elif summary:
            preview.update(Text(summary + " (queued; started as the dashboard's limits allow)"))
        else:
            preview.update(Text("$ " + command_line(build_config(values))))
        self.query_one("#launch", Button).disabled = bool(errors)
        return errors

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def changed(self) -> None:
        self.validate()

    @on(Select.Changed, "#f-preset")
    def preset_chosen(self, event: Select.Changed) -> None:
        """A preset fills the form; every field stays editable afterwards."""
        if event.value:
            self.fill(build_config({"preset": event.value}).model_dump(), skip={"preset"})

    @on(Select.Changed, "#f-dataset")
    def dataset_chosen(self, event: Select.Changed) -> None:
        """A new data set brings its own budget (0.3 for digit images, 8/255 for CIFAR)."""
        if event.value == self.dataset:  # mounting the form, not a person's choice
            return
        self.dataset = str(event.value)
        fresh = build_config({"dataset": event.value})
        self.fill({"eps": fresh.eps, "alpha": fresh.alpha})

    def fill(self, values: dict[str, Any], *, skip: Collection[str] = ()) -> None:
        for field in FIELDS:
            if field.name not in values or field.name in skip:
                continue
            value = values[field.name]
            widget = self.query_one(f"#f-{field.name}")
            if field.name == "augment":
                widget.value = next(k for k, v in _AUGMENT.items() if v == value)  # type: ignore[attr-defined]
            elif isinstance(widget, Switch):
                widget.value = bool(value)
            elif isinstance(widget, Select):
                widget.value = value
            elif isinstance(widget, Input):
                widget.value = _text(value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "launch":
            self.action_launch()
        else:
            self.app.pop_screen()

    def action_launch(self) -> None:
        if self.validate():
            self.notify("fix the fields marked in red first", severity="warning")
            return
        try:
            configs = self.grid() if self.sweep_name else [build_config(self.values())]
        except ConfigError as exc:  # validate() said yes, so this is only a safety net
            self.notify(str(exc), severity="error", markup=False)
            return
        self.query_one("#launch", Button).disabled = True
        if self.sweep_name:
            self.queue_sweep(self.sweep_name, configs)
        else:
            call_service(
                self, lambda: self.bench.create_run(configs[0]), lambda i: self.done(Launched(i))
            )

    def queue_sweep(self, name: str, configs: list[RunConfig]) -> None:
        """Queue the grid in sweep `name`; what the sweep already holds is not queued again."""

        def queued(ids: tuple[list[int], list[int]]) -> None:
            new, held = ids
            text = f"sweep {name}: {len(new)} runs queued, {len(held)} already there"
            self.notify(text, markup=False)
            self.done(Launched(sweep=name))

        call_service(self, lambda: self.bench.queue_sweep(name, configs), queued)

    def done(self, launched: Launched) -> None:
        """Back to whoever opened the form, with what was queued (unless the person left)."""
        if self.is_current:
            self.dismiss(launched)
