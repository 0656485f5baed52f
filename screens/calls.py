"""Service calls off the UI thread: one helper, so every action refuses the same way.

A call to the workbench may wait on the store's write lock or on a process, so it runs in
a thread worker (Harlequin style); a refusal (`CaatError`, `StoreError`, an OS error)
becomes one error notification and the person's next key still works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from textual.dom import DOMNode
from textual.worker import Worker

from caat_app.errors import CaatError

from .messages import StoreReach, read_failed

if TYPE_CHECKING:
    from caat_app.evaluation.plan import EvalSpec
    from caat_app.runs.service import Workbench
    from caat_storage import Run

T = TypeVar("T")


def one_line(exc: BaseException) -> str:
    """An error as one line for a notification: an OS error's text may span lines."""
    return " ".join(str(exc).split()) or type(exc).__name__


def refusals() -> tuple[type[BaseException], ...]:
    """What a service call may refuse with; the store's error is imported only when asked
    (by then a store is open, so this costs nothing, and the first paint never pays it)."""
    from caat_storage import StoreError

    return (CaatError, StoreError, OSError)


def call_service(
    node: DOMNode,
    call: Callable[[], T],
    then: Callable[[T], Any] | None = None,
    *,
    group: str = "service",
    exclusive: bool = False,
) -> Worker[None]:
    """Run `call` in a thread worker of `node`; `then(result)` runs on the UI thread after.

    A refusal is shown as one line (the app's notification), and `then` is skipped.
    """

    def run() -> None:
        try:
            result = call()
        except refusals() as exc:
            app = node.app
            failed = read_failed(exc)
            if isinstance(failed, StoreReach):  # the app says so once, not once per call
                app.call_from_thread(app.post_message, failed)
            else:
                app.call_from_thread(app.notify, one_line(exc), severity="error", markup=False)
            return
        if then is not None:
            node.app.call_from_thread(then, result)

    return node.run_worker(run, thread=True, group=group, exclusive=exclusive)


# --------------------------------------------------------------------------- calls screens share


def cancel_run(node: DOMNode, bench: Workbench, run: Run) -> None:
    """Ask a run's worker to stop (it checkpoints and ends `cancelled`), saying so."""
    call_service(
        node,
        lambda: bench.cancel_run(run),
        lambda _: node.app.notify(f"run {run.id}: asked to stop", markup=False),
    )


def start_evaluation(node: DOMNode, bench: Workbench, run_id: int, spec: EvalSpec) -> None:
    """Record an evaluation of a run and start its worker now, saying so.

    Evaluations are not queued (asking is starting), so a dashboard whose workers are off
    refuses instead of leaving a job that nothing would ever start.
    """
    if not bench.start_workers:
        node.app.notify(
            "workers are off in this dashboard: no evaluation started", severity="warning"
        )
        return
    call_service(
        node,
        lambda: bench.start_eval(run_id, spec),
        lambda job_id: node.app.notify(
            f"evaluation {job_id} of run {run_id} started", markup=False
        ),
    )
