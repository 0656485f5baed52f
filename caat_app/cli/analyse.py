"""`caat compare` and `caat front`: runs side by side, and the SA-AA front of many.

Torch-free. The front is `caat_app.analysis.points.front_view`, the one the dashboard's
front screen draws; this module adds what a command line needs around it: the checks of
its options, the one-line errors that say what to run first, files and tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from caat_app.cli.base import err, open_store, out
from caat_app.cli.options import DbOption, JsonOption, check_run_refs
from caat_app.cli.render import config_table, front_csv, front_table, metrics_table
from caat_app.errors import CaatError
from caat_app.present import format_budget
from caat_app.runs.stored import option
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_app.analysis.points import FrontView
    from caat_storage import Run, Store


def compare_command(
    runs: list[str] = typer.Argument(
        ..., help="two or more run ids or names", callback=check_run_refs
    ),
    show_all: bool = typer.Option(False, "--all", help="also list the options that are equal"),
    as_json: bool = JsonOption,
    db: str | None = DbOption,
) -> None:
    """Runs side by side: the options that differ, and the metrics each reached."""
    from caat_app.analysis.compare import compare

    if len(runs) < 2:
        raise CaatError("compare needs two or more runs")
    store = open_store(db)
    records = [store.find_run(ref) for ref in runs]
    data = compare(records)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table, equal = config_table(records, data["config"], show_all=show_all)
    out.print(table)
    if equal:
        out.print(Text(f"{equal} options are equal in every run (--all lists them)"))
    out.print(metrics_table(records, data["metrics"]))


def front(
    sweep: str | None = typer.Option(None, help="only the runs of this sweep"),
    filter_text: str | None = typer.Option(
        None, "--filter", help="only runs matching this text (as the dashboard's filter)"
    ),
    split: str = typer.Option("test", help="accuracies of the test or the val split"),
    attack: str | None = typer.Option(
        None,
        help="AA from `caat eval` results of this attack for every run, or epoch-pgd for "
        "training's per-epoch PGD (default: each run's stored AutoAttack, else epoch-pgd)",
    ),
    eps: str | None = typer.Option(None, help="with --attack: its budget (default: the runs' ε)"),
    norm: str = typer.Option("linf", help="with --attack: linf or l2"),
    checkpoint: str = typer.Option("best", help="with --attack: best or last"),
    ref: str = typer.Option("0,0", help="hypervolume reference point SA,AA in [0, 1]"),
    plot: Path | None = typer.Option(None, "--plot", help="write a figure: .png, .svg or .pdf"),
    csv_path: Path | None = typer.Option(None, "--csv", help="write the points as CSV"),
    as_json: bool = JsonOption,
    db: str | None = DbOption,
) -> None:
    """The SA-AA front of finished runs: points, each family's front, hypervolume, verdict.

    AA is each run's strongest stored evaluation at its own ε and norm (AutoAttack, then
    AutoAttack fast; SA then from the same images), else the per-epoch PGD of training's
    best epoch, a training-time check; with --attack, that evaluated attack for every run
    (`--attack epoch-pgd`: training's per-epoch PGD for every run).
    """
    from caat_app.analysis.points import EPOCH_PGD, front_view

    ref_point = _check_front(split, ref, sweep, filter_text, plot, attack, eps)
    store = open_store(db)
    runs = store.sweep_runs(sweep) if sweep else store.list_runs(search=filter_text)
    if sweep and not runs:
        raise CaatError(f"--sweep: no sweep named {sweep!r}")
    evaluated = attack not in (None, EPOCH_PGD)
    if attack is not None and evaluated:
        view = _evaluated_front(store, sweep, runs, attack, eps, norm, checkpoint, ref_point)
    else:
        ids = [r.id for r in runs if r.status == RunStatus.FINISHED and r.id is not None]
        stored = store.evals_of_runs(ids) if attack is None else {}  # epoch-pgd: none
        view = front_view(runs, split=split, results=stored, ref=ref_point)
    rep = view.report
    if plot is not None:
        _write(plot, lambda: _plot(rep, plot, view.labels, sweep))
    if csv_path is not None:
        _write(csv_path, lambda: csv_path.write_text(front_csv(rep)))
    if as_json:
        print(json.dumps(rep, indent=2))
        return
    scope = f"AA: {view.source}" if evaluated else f"{split} split, AA: {view.source}"
    out.print(front_table(rep, scope))
    for sentence in rep["verdict"]:
        out.print(Text(sentence))


def _check_front(
    split: str,
    ref: str,
    sweep: str | None,
    filter_text: str | None,
    plot: Path | None,
    attack: str | None,
    eps: str | None,
) -> tuple[float, float]:
    """The options' own mistakes, before the store is opened; the reference point."""
    from caat_app.analysis.points import EPOCH_PGD, SPLITS

    if split not in SPLITS:
        raise CaatError(f"--split: unknown {split!r}; choose one of {', '.join(SPLITS)}")
    try:
        ref_point = tuple(float(x) for x in ref.split(","))
    except ValueError:
        ref_point = ()
    if len(ref_point) != 2 or not all(0 <= x <= 1 for x in ref_point):
        raise CaatError(f"--ref: expected SA,AA with both in [0, 1], got {ref!r}")
    if sweep and filter_text:
        raise CaatError("give --sweep or --filter, not both")
    if plot is not None and plot.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise CaatError(f"--plot: {plot.name} is not .png, .svg or .pdf")
    if attack in (None, EPOCH_PGD) and eps is not None:
        raise CaatError("--eps chooses the budget of an evaluated --attack; give --attack too")
    return ref_point[0], ref_point[1]


def _evaluated_front(
    store: Store,
    sweep: str | None,
    runs: list[Run],
    attack: str,
    eps: str | None,
    norm: str,
    checkpoint: str,
    ref: tuple[float, float],
) -> FrontView:
    """The front with AA from stored evaluations; runs without one are named, not hidden."""
    from caat_app.analysis.points import EvalAxis, front_view
    from caat_app.evaluation.plan import eval_spec

    finished = [r for r in runs if r.status == RunStatus.FINISHED.value]
    budgets = {option(r, "eps") for r in finished}
    if eps is None and len(budgets) > 1:
        raise CaatError("--eps: these runs were trained at different ε; say which budget")
    spec = eval_spec(
        attacks=attack,
        budgets=eps or [budgets.pop() if budgets else 1.0],
        norm=norm,
        checkpoint=checkpoint,
    )
    axis = EvalAxis(spec.attacks[0], spec.budgets[0], spec.norm, spec.checkpoint)
    results = store.evals_of_runs([r.id for r in finished if r.id is not None])
    view = front_view(finished, axis=axis, results=results, ref=ref)
    options = f"--attacks {axis.attack} --eps {format_budget(axis.eps)} --norm {axis.norm}"
    if finished and not view.report["points"]:
        which = f"--sweep {sweep}" if sweep else str(finished[0].id)
        raise CaatError(
            f"no run here was evaluated with {axis.text}; run `caat eval` on them first "
            f"(e.g. caat eval {which} {options})"
        )
    if view.missing:
        missing = " ".join(map(str, view.missing))
        err.print(
            Text(
                f"{len(view.missing)} run(s) left out, never evaluated with {axis.text}: "
                f"{missing} (caat eval {missing} {options})"
            )
        )
    return view


def _plot(report: dict[str, Any], path: Path, labels: tuple[str, str], sweep: str | None) -> None:
    from caat_app.analysis.figure import save_front_figure

    title = f"SA-AA front: {sweep}" if sweep else None
    save_front_figure(report, path, sa_label=labels[0], aa_label=labels[1], title=title)


def _write(path: Path, write: Callable[[], Any]) -> None:
    """Write a file the person asked for; an OS refusal is a one-line error."""
    try:
        write()
    except OSError as exc:
        raise CaatError(f"cannot write {path}: {exc.strerror or exc}") from None
    err.print(Text(f"wrote {path}"))
