"""`caat agent`: serve a store's queue from this host until stopped (see `runs.agent`)."""

from __future__ import annotations

import typer
from rich.text import Text

from caat_app.cli.base import open_store, out
from caat_app.cli.options import DbOption
from caat_app.errors import CaatError


def _gpu_list(text: str | None) -> list[int] | None:
    """`0,1` → [0, 1]; `none` → [] (CPU only); None → ask nvidia-smi."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none", "cpu"):
        return []
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise CaatError(f"--gpus: expected GPU indices like 0,1 or none, got {text!r}") from None
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise CaatError(f"--gpus: each GPU once, none negative, got {text!r}")
    return sorted(indices)


def agent_command(
    db: str | None = DbOption,
    gpus: str | None = typer.Option(
        None, "--gpus", help="GPU indices this agent uses, e.g. 0,1, or none (default: all listed)"
    ),
    per_gpu: int = typer.Option(
        1, "--per-gpu", min=1, help="runs and evaluations at once on each GPU"
    ),
    max_cpu: int = typer.Option(
        1, "--max-cpu", min=1, help="runs and evaluations at once on the CPU"
    ),
    max_runs: int | None = typer.Option(
        None,
        "--max-runs",
        min=1,
        help="start this many runs (evaluations do not count), wait for them, then exit",
    ),
    drain: bool = typer.Option(
        False, "--drain", help="on Ctrl-C or SIGTERM let running work finish (default: cancel)"
    ),
    until_idle: bool = typer.Option(
        False,
        "--until-idle",
        help="exit once no run or evaluation is queued and nothing of ours runs",
    ),
    poll: float = typer.Option(2.0, "--poll", min=0.05, help="seconds between looks at the queue"),
) -> None:
    """Train queued runs and run queued evaluations (`caat eval --queue`) from the store on
    this host's GPUs until stopped (any number of agents, on any hosts, may serve one
    store; nothing starts twice). An evaluation takes a slot as a run does."""
    from caat_app.runs.agent import Agent, install_signals
    from caat_app.runs.launcher import Gpu, list_gpus
    from caat_storage.status import this_host

    wanted = _gpu_list(gpus)
    store = open_store(db)
    found = list_gpus() if wanted is None else [Gpu(i, f"GPU {i}", 0) for i in wanted]
    agent = Agent(
        store, gpus=found, per_gpu=per_gpu, max_cpu=max_cpu, max_runs=max_runs, drain=drain,
        poll=poll,
    )  # fmt: skip
    install_signals(agent)
    where = ", ".join(str(g.index) for g in found) or "none"
    out.print(Text(f"agent on {this_host()}: GPUs {where}, {max_cpu} CPU slot(s), {store.url}"))
    report = agent.run(until_idle=until_idle)
    ended = {"signal": "stopped", "max-runs": "started its --max-runs", "idle": "queue empty"}
    evals = f", {len(report.evals)} evaluation(s)"
    if report.evals:
        evals += f" ({', '.join(str(job) for job in report.evals)})"
    ending = ended.get(report.stopped_by, "ended")
    out.print(Text(f"agent {ending}: {len(report.started)} run(s){evals}"))
