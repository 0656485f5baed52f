"""How `caat bench` prints its report."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_report(console: Console, report: dict[str, Any]) -> None:
    title = (
        f"caat bench: {report['model']} on {report['dataset']}, batch "
        f"{report['batch_size']}, {report['attack']}, {report['device']}"
    )
    table = Table(title=title, title_justify="left")
    for col in ("step", "ms / step", "images / s", "× clean", "× vanilla"):
        table.add_column(col, justify="left" if col == "step" else "right")
    ms, ips = report["ms_per_step"], report["images_per_sec"]
    for kind, label in (("clean", "clean training"), ("vanilla", "Vanilla AT"), ("caat", "CA-AT")):
        table.add_row(
            label,
            f"{ms[kind]:.2f}",
            f"{ips[kind]:.0f}",
            f"{ms[kind] / ms['clean']:.2f}",
            f"{ms[kind] / ms['vanilla']:.3f}",
        )
    console.print(table)
    console.print(
        f"metric logging: {report['logging_ms_per_step']:.3f} ms per step "
        f"= {100 * report['logging_overhead']:.2f}% of a CA-AT step"
    )
    if "evaluation" in report:
        ev = report["evaluation"]
        for attack, label in (("pgd", "PGD-20"), ("autoattack-fast", "AutoAttack (fast)")):
            a = ev["attacks"][attack]
            console.print(
                f"evaluation, {label}: {a['images_per_sec']:.0f} images / s "
                f"({ev['images']} test images in {a['seconds']:.2f} s, {ev['model']} trained "
                f"{ev['trained_epochs']} epochs, ε={ev['eps']:g}: "
                f"{100 * a['accuracy']:.1f}% robust, {100 * ev['clean']:.1f}% clean)"
            )
    if "dashboard_start" in report:
        start = report["dashboard_start"]
        console.print(
            f"dashboard start-up: {start['seconds']:.2f} s to the first page of runs "
            f"({start['runs_in_store']} runs in the store, median of {start['repeats']})"
        )
