"""Registries: one table per concept (attacks, models, data sets, losses, presets).

Adding an attack, a model or a data set is one new entry in its table plus its tests;
the config's validation, the CLI's choices and help, the launch form and the evaluation
plan all read the table, never a copy of its names. An entry is torch-free data that
names its implementation lazily (`"caat_app.attacks.pgd:pgd"`), so the dashboard and
the non-training commands read a registry without importing torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import Any, Generic, TypeVar


@cache
def load(path: str) -> Any:
    """The object a `"package.module:attribute"` path names, imported on first use.

    Cached: a training step looks its attack and loss up by name every time.
    """
    module, _, attribute = path.partition(":")
    return getattr(import_module(module), attribute)


def one_of(names: Sequence[str]) -> str:
    """`a, b or c`: choices in a sentence."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass(frozen=True)
class Entry:
    """What every registry entry has: a name, one line of help, its implementation."""

    name: str
    help: str
    impl: str = ""

    def load(self) -> Any:
        """The implementation (imports its module, torch and all, on first use)."""
        if not self.impl:
            raise ValueError(f"{self.name} has no implementation to load")
        return load(self.impl)


E = TypeVar("E", bound=Entry)


class Registry(Mapping[str, E], Generic[E]):
    """Entries by name, in the order people read them; iterating gives the names."""

    def __init__(self, kind: str, entries: Iterable[E]) -> None:
        self.kind = kind
        self._entries: dict[str, E] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise ValueError(f"two {kind} entries are named {entry.name!r}")
            self._entries[entry.name] = entry

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> E:
        """The entry, or a ValueError that lists the choices (a typo never runs silently)."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def choices(self) -> str:
        """The names for a help text: `a, b, c`."""
        return ", ".join(self.names)
