"""Small modal screens: confirm, ask for a line of text, edit a note, help."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Markdown, TextArea


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
        with Vertical(classes="dialog note"):
            yield Label(self.title_text, markup=False)
            yield TextArea(self.text, id="note")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)


HELP = """\
# caat dashboard

Runs train in **worker processes**: quitting the dashboard leaves them training,
and opening it again shows them live. Everything shown comes from the store.

## Runs
| key | action |
|---|---|
| `n` | new run (the launch form) |
| `enter` | monitor the selected run |
| `e` | evaluate the selected run: attack zoo, paper table, masking report |
| `/` | filter by name, method, data set, status, tag |
| `s` / `S` | sort by the next column / reverse the order (or click a header) |
| `[` `]` | previous / next page |
| `c` | cancel a running or queued run (asks first) |
| `d` | delete a finished run, its rows and its folder (asks first) |
| `r` `t` `o` | rename, tag, add a note |
| `l` | re-launch the run's config in the form |
| `f` | show the run's folder |
| `space` | mark a run; `C` compares the marked runs |
| `F` | the SA-AA front of the finished runs the filter shows |

## Compare and front
`m` the metric overlaid · `e` show the equal options · `v` test or validation split ·
`a` the front's AA axis: training's PGD or an evaluated attack and budget

## Monitor
| key | action |
|---|---|
| `x` | x axis: step, epoch, time |
| `m` | smoothing on/off |
| `g` | μ on a log10 scale |
| `c` | cancel the run |
| `e` | its evaluations |
| `escape` | back to the runs |

## Evaluation
Evaluations run in worker processes, like training: leaving the screen leaves them going.

| key | action |
|---|---|
| `n` | new evaluation: attacks, budgets, norm, images, checkpoint (`ctrl+s` starts) |
| `c` | cancel the running evaluation (asks first; what it measured stays stored) |
| `escape` | back |

## Everywhere
`?` this help · `ctrl+p` command palette · `ctrl+t` light/dark theme · `q` quit
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Markdown(HELP)
