"""Names, tags and error texts as people read them: each must stay on one line of a table."""

import unicodedata
from collections.abc import Sequence
from datetime import datetime

MAX_NAME_LENGTH = 200  # the same limit as RunConfig.name
MAX_SWEEP_LENGTH = 100  # leaves room in a run name for `<sweep>-<method>-<param>-s<seed>`


def _breaks_lines(text: str) -> bool:
    """Control characters and line/paragraph separators: they would split a table row."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


def _check_label(name: str, what: str, limit: int) -> str:
    """A name stripped, or a ValueError saying why: it is shown on one line of a table."""
    text = name.strip()
    if not text:
        raise ValueError(f"a {what} name cannot be empty")
    if len(text) > limit:
        raise ValueError(f"a {what} name is at most {limit} characters, got {len(text)}")
    if _breaks_lines(text):
        raise ValueError(f"a {what} name cannot contain line breaks or control characters")
    return text


def check_name(name: str) -> str:
    """A run name, stripped, or ValueError."""
    return _check_label(name, "run", MAX_NAME_LENGTH)


def check_sweep_name(name: str) -> str:
    """A sweep name, stripped, or ValueError: it prefixes its runs' names."""
    return _check_label(name, "sweep", MAX_SWEEP_LENGTH)


def normalise_tags(tags: Sequence[str]) -> list[str]:
    """Stripped, without empties or repeats, first spelling first; a comma is refused."""
    out: list[str] = []
    for tag in tags:
        if "," in tag:
            raise ValueError(f"a tag cannot contain a comma: {tag!r}")
        text = tag.strip()
        if _breaks_lines(text):
            raise ValueError(f"a tag cannot contain line breaks or control characters: {tag!r}")
        if text and text not in out:
            out.append(text)
    return out


def split_tags(text: str) -> list[str]:
    """A run's stored `tags` text back as a list."""
    return [tag for tag in (part.strip() for part in text.split(",")) if tag]


def _utc_text(moment: datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def lost_worker_error(
    reason: str, pid: int | None, last_heartbeat: datetime | None, host: str | None = None
) -> str:
    """The error text of a run whose worker vanished: what happened, which pid on which
    host (when known: with a shared store it may be any), when last seen."""
    who = f"pid {pid}" if pid is not None else "pid unknown"
    who += f" on {host}" if host else ""
    return f"{reason} ({who}, last heartbeat {_utc_text(last_heartbeat)})"
