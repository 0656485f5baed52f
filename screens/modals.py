"""Small modal screens: confirm, a line of text, a note, the help, the front's AA axis.

Each is a question with an answer (`dismiss`); none touches the store or the app, so
any screen can ask one. Widgets only a few dialogs need (the note's TextArea, the help's
Markdown) are imported when they open, off the path of the first paint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

if TYPE_CHECKING:
    from caat_app.analysis.points import EvalAxis

TRAINING_AXIS = "default: AutoAttack when stored, else training PGD"


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no; `escape` is no."""

    BINDINGS = [Binding("escape", "dismiss(False)", "No"), Binding("y", "dismiss(True)", "Yes")]

    def __init__(self, question: str, *, confirm: str = "Yes") -> None:
        super().__init__(classes="modal")
        self.question = question
        self.confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, markup=False)
            with Horizontal(classes="buttons"):
                yield Button(self.confirm, variant="error", id="yes")
                yield Button("No", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TextPrompt(ModalScreen[str | None]):
    """One line of text (a name, tags); `escape` cancels with None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str = "", *, placeholder: str = "") -> None:
        super().__init__(classes="modal")
        self.title_text = title
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, markup=False)
            yield Input(self.value, placeholder=self.placeholder, id="text")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)


class NoteScreen(ModalScreen[str | None]):
    """A multi-line note; `ctrl+s` saves, `escape` cancels."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(self, title: str, text: str = "") -> None:
        super().__init__(classes="modal")
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        from textual.widgets import TextArea

        with Vertical(classes="dialog note"):
            yield Label(self.title_text, markup=False)
            yield TextArea(self.text, id="note")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def action_save(self) -> None:
        self.dismiss(self.query_one("#note").text)  # type: ignore[attr-defined]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key and what it does, as the screens' own bindings say (the app writes it)."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "Close")]

    def __init__(self, markdown: str) -> None:
        super().__init__()
        self.markdown = markdown

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown

        with VerticalScroll(classes="dialog help"):
            yield Markdown(self.markdown)


class AxisPicker(ModalScreen[int | None]):
    """Choose the front's AA axis: 0 is the default (stored AutoAttack, else training's PGD),
    then every evaluated attack and budget."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, axes: list[EvalAxis], current: EvalAxis | None) -> None:
        super().__init__(classes="modal")
        self.axes = axes
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog axis-picker"):
            yield Label("AA axis of the front")
            options = [Option(Text(TRAINING_AXIS))]
            options += [Option(Text(f"evaluated: {axis.text}")) for axis in self.axes]
            yield OptionList(*options, id="axis-options")
            if not self.axes:
                yield Static(
                    Text("no shown run has evaluations yet: press e on a run to evaluate it"),
                    classes="hint",
                )

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        chosen = self.axes.index(self.current) + 1 if self.current in self.axes else 0
        options.highlighted = chosen
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_index)
