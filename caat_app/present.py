"""How numbers, budgets, statuses and methods are written for people (and budgets read).

One place for the CLI and the dashboard, so a run reads the same in both. Torch-free
and import-light: the dashboard imports it on its way to the first paint.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

NORM_TEXT = {"linf": "L∞", "l2": "L2"}

STATUS_STYLE = {
    "queued": "cyan",
    "running": "bold yellow",
    "finished": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "diverged": "red",
}
"""Rich styles of a run's (or an evaluation's) status; the live and the broken stand out."""

PARAM_SYMBOL = {"caat": "γ", "vanilla": "λ"}
"""The trade-off parameter of each method: CA-AT's threshold γ, Vanilla AT's weight λ."""


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


def _escape(ch: str) -> str:
    """A control character as Python writes it in a string: `\\x1b`, `\\u2028`."""
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, keep: str = "") -> str:
    """`text` with every control character (C0, DEL, C1) and line or paragraph separator
    written as a visible escape, except those in `keep` (say `\\n` for a traceback).

    New names cannot hold them (the store's label rule), but a row written by an older
    build, or a path a person typed, can: a raw ESC would reach the terminal and act.
    """
    if text.isprintable():
        return text  # the common case, decided in C
    return "".join(
        _escape(ch) if ch not in keep and unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
        for ch in text
    )


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


def norm_text(norm: Any) -> str:
    """`L∞` or `L2`; anything else as it is."""
    return NORM_TEXT.get(str(norm), str(norm))


def pct(value: float | None, empty: str = "–") -> str:
    """An accuracy (a fraction) in % with one decimal, or `empty` where none was measured."""
    return empty if value is None else f"{100 * value:.1f}"


def number(value: Any, digits: int = 4) -> str:
    """A value for a table cell: short floats stay short, tiny or huge ones go to g-format."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1e4 or 0 < abs(value) < 1e-3:
            return f"{value:.{digits}g}"
        if value != int(value):
            return f"{value:.{digits}f}".rstrip("0").rstrip(".")
        return f"{value:g}"
    return str(value)


def param_label(method: str, param: float | None) -> str:
    """`γ=0.8` or `λ=0.5`: the point's name on a front."""
    symbol = PARAM_SYMBOL.get(method, "?")
    return f"{symbol}={'-' if param is None else f'{param:g}'}"


def method_label(method: str, param: float | None) -> str:
    """`caat γ=0.8` or `vanilla λ=0.5`: a run's method in a table."""
    return f"{method} {param_label(method, param)}"


def model_text(run: Any) -> str:
    """`cub200/swin-t+adapter`: a run's data set and model, with its PEFT mode unless it
    trains everything. One JSON parse of the stored config per run (cheap for a page);
    read here rather than through `runs.stored.option`, which would close an import
    circle (stored → config → present). A damaged config shows as no mode."""
    try:
        peft = json.loads(run.config).get("peft", "full")
    except (TypeError, ValueError, AttributeError):
        peft = "full"
    mode = f"+{visible(str(peft))}" if peft and peft != "full" else ""
    return f"{run.dataset}/{run.model}{mode}"
