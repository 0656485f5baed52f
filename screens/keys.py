"""Keys that are also commands: the footer, the help and the command palette all read a
screen's `BINDINGS`, so a key is declared once and the three can never disagree.

Textual's `Binding` already carries the footer's short `description` and a `tooltip`
(what the key does); `Key` adds the `title` the palette and the help name it by.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.keys import format_key
from textual.widget import Widget


@dataclass(frozen=True)
class Key(Binding):
    """A binding with a command's name: in the palette when it has a `title` and a `tooltip`."""

    title: str = ""
    """How the palette and the help name the action ("Evaluate run"); the footer keeps
    `description` ("Eval"), short enough for 80 columns."""


def bindings_of(source: Iterable[BindingType]) -> list[Binding]:
    """A BINDINGS list as Binding objects, as written (Textual's own expansion would
    drop `Key.title` and split `"escape,q"` into one binding per key)."""
    return [b if isinstance(b, Binding) else Binding(*b) for b in source]


def palette_commands(
    node: Widget | App[Any], source: Iterable[BindingType]
) -> Iterator[SystemCommand]:
    """Palette entries for `node`'s keys that name a command; choosing one runs its action."""
    for binding in bindings_of(source):
        if isinstance(binding, Key) and binding.title and binding.tooltip:
            run = partial(node.run_action, binding.action)
            yield SystemCommand(binding.title, binding.tooltip, run)


_SPOKEN = {"enter": "enter", "escape": "escape"}
"""Keys the help spells out rather than drawing (`⏎`, `esc`), as the README writes them."""


def key_text(binding: Binding) -> str:
    """The keys of a binding as a person types them: `/`, `[`, `ctrl+s`, `escape`."""
    if binding.key_display:
        return f"`{binding.key_display}`"
    keys = [k.strip() for k in binding.key.split(",")]
    return " ".join(f"`{_SPOKEN.get(k) or format_key(k)}`" for k in keys)


def action_text(binding: Binding) -> str:
    """What a key does, in the help: its command's name (or the footer's word), then why."""
    name = binding.title if isinstance(binding, Key) and binding.title else binding.description
    return f"{name}: {binding.tooltip}" if binding.tooltip else name


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def key_table(source: Iterable[BindingType]) -> list[str]:
    """A Markdown table of keys and what they do; keys without a description are left out."""
    rows = [b for b in bindings_of(source) if b.description or isinstance(b, Key)]
    lines = ["| key | action |", "|---|---|"]
    lines += [f"| {_cell(key_text(b))} | {_cell(action_text(b))} |" for b in rows]
    return lines


def help_markdown(intro: str, sections: Sequence[tuple[str, str, Iterable[BindingType]]]) -> str:
    """The help: `intro`, then per screen (title, a note, its bindings) a table of its keys."""
    lines = [intro.strip(), ""]
    for title, note, bindings in sections:
        lines += [f"## {title}", ""]
        if note:
            lines += [note, ""]
        lines += [*key_table(bindings), ""]
    return "\n".join(lines)
