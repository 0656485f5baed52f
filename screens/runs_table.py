"""What the runs table shows of a run: its columns (and the store's sort key of each) and
its cells, the same for a run from the store and for one read by `caat_storage.firstpage`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text

from caat_app.present import STATUS_STYLE, method_label, model_text, pct, visible
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_storage import Run

PAGE_SIZE = 100
# (column label, store sort key)
COLUMNS = [
    ("name", "name"),
    ("method", "param"),
    ("data", "dataset"),
    ("ε", "eps"),
    ("status", "status"),
    ("epoch", "epochs_done"),
    ("SA", "best_val_clean"),
    ("PGD", "best_val_adv"),  # training's per-epoch PGD, not an evaluation's AA
    ("φ", "last_phi"),
    ("μ", "last_mu"),
    ("started", "started_at"),
    ("time", "started_at"),
]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _duration(run: Run, now: datetime) -> str:
    if run.started_at is None:
        return "-"
    end = run.finished_at or (now if run.status == RunStatus.RUNNING else run.heartbeat_at or now)
    seconds = int(max((end - run.started_at).total_seconds(), 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def run_cells(run: Run, now: datetime, marked: bool = False) -> list[Any]:
    """One table row. User text (names) goes in as `Text`, never parsed as markup, its
    control characters escaped: a raw ESC from an older build's name would act on the
    terminal under the dashboard."""
    started = run.started_at.astimezone().strftime("%m-%d %H:%M") if run.started_at else "-"
    return [
        Text.assemble(("● " if marked else "", "bold"), visible(run.name)),
        Text(method_label(run.method, run.param)),
        Text(model_text(run)),
        _num(run.eps, ".3g"),
        Text(run.status, style=STATUS_STYLE.get(run.status, "")),
        f"{run.epochs_done}/{run.epochs_total}",
        pct(run.best_val_clean, "-"),
        pct(run.best_val_adv, "-"),
        _num(run.last_phi, "+.2f"),
        _num(run.last_mu, ".3g"),
        started,
        _duration(run, now),
    ]
