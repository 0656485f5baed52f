"""The evaluation request form: attacks, budgets, norm, images, checkpoint.

Checked by `eval_spec` as the person types, so what it accepts is exactly what the
worker runs; it answers with the checked `EvalSpec` (or None) and starts nothing itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    Checkbox,
    Input,
    Label,
    Select,
    SelectionList,
    Static,
)

from caat_app.attacks.registry import NORMS
from caat_app.errors import CaatError
from caat_app.evaluation.plan import (
    ATTACK_HELP,
    CHECKPOINTS,
    DEFAULT_ATTACKS,
    EVAL_ATTACKS,
    EvalSpec,
    eval_spec,
    plan,
)
from caat_app.present import format_budget, visible
from caat_app.runs.stored import option

if TYPE_CHECKING:
    from caat_storage import Run


class EvalForm(ModalScreen[EvalSpec | None]):
    """An evaluation request, checked by `eval_spec` as the person types: what it accepts
    is exactly what the worker runs."""

    BINDINGS = [
        Binding("ctrl+s", "start", "Start"),
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(self, run: Run) -> None:
        super().__init__(classes="modal")
        self.run = run
        try:
            self.budget = format_budget(float(option(run, "eps")))
        except (TypeError, ValueError):
            self.budget = ""  # no readable budget: the person types one
        norm = option(run, "norm")
        self.norm = norm if norm in NORMS else NORMS[0]
        self.spec: EvalSpec | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog eval-form"):
            title = Text(f"Evaluate run {self.run.id} ", style="bold")
            title.append(visible(self.run.name), style="")
            yield Label(title, id="eval-title")
            yield SelectionList[str](
                *[
                    (
                        Text.assemble((name, "bold"), f"  {ATTACK_HELP.get(name, '')}"),
                        name,
                        name in DEFAULT_ATTACKS,
                    )
                    for name in EVAL_ATTACKS
                ],
                id="e-attacks",
                compact=True,
            )
            with Horizontal(classes="eval-field"):
                yield Label("budgets ε", classes="eval-label")
                yield Input(self.budget, placeholder="e.g. 8/255,16/255", id="e-eps", compact=True)
            with Horizontal(classes="eval-field"):
                yield Label("norm", classes="eval-label")
                yield Select(
                    [(n, n) for n in NORMS],
                    value=self.norm,
                    allow_blank=False,
                    id="e-norm",
                    compact=True,
                )
            with Horizontal(classes="eval-field"):
                yield Label("images (0: all)", classes="eval-label")
                yield Input("1000", id="e-n", compact=True)
            with Horizontal(classes="eval-field"):
                yield Label("checkpoint", classes="eval-label")
                yield Select(
                    [(c, c) for c in CHECKPOINTS],
                    value=CHECKPOINTS[0],
                    allow_blank=False,
                    id="e-checkpoint",
                    compact=True,
                )
            with Horizontal(classes="eval-field"):
                yield Label("", classes="eval-label")
                yield Checkbox("measure again (force)", id="e-force", compact=True)
            yield Static("", id="e-error")
            with Horizontal(classes="buttons"):
                yield Button("Start", variant="primary", id="e-start", compact=True)
                yield Button("Cancel", id="e-cancel", compact=True)

    def on_mount(self) -> None:
        self.validate()
        self.query_one("#e-attacks").focus()

    def validate(self) -> EvalSpec | None:
        """The checked request, or None with `eval_spec`'s one-line reason shown."""
        n_text = self.query_one("#e-n", Input).value.strip()
        n: Any = int(n_text) if n_text.isdecimal() else n_text  # else eval_spec says why
        try:
            spec: EvalSpec | None = eval_spec(
                attacks=list(self.query_one("#e-attacks", SelectionList).selected),
                budgets=self.query_one("#e-eps", Input).value,
                norm=str(self.query_one("#e-norm", Select).value),
                n=n,
                checkpoint=str(self.query_one("#e-checkpoint", Select).value),
                force=self.query_one("#e-force", Checkbox).value,
            )
            message = ""
        except CaatError as exc:
            spec, message = None, str(exc)
        note = self.query_one("#e-error", Static)
        if spec is None:
            note.update(Text(message))
        else:
            note.update(Text(f"{len(plan(spec))} measurements (clean and probes included)"))
        note.set_class(spec is None, "error")
        self.query_one("#e-eps", Input).set_class(message.startswith("--eps"), "invalid")
        self.query_one("#e-n", Input).set_class(message.startswith("--n"), "invalid")
        self.query_one("#e-start", Button).disabled = spec is None
        self.spec = spec
        return spec

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    @on(SelectionList.SelectedChanged)
    def changed(self) -> None:
        self.validate()

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        spec = self.validate()
        if spec is None:
            self.notify("fix the request first", severity="warning")
            return
        self.dismiss(spec)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "e-start":
            self.action_start()
        else:
            self.dismiss(None)
