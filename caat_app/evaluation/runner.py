"""Robustness evaluation of a saved run: the paper's attack table, stored and reused.

Each (attack, ε) is measured on the first N test images of a fixed stratified order,
against the run's best (validation-chosen) or last checkpoint, loaded weights-only.
A result identical in run, checkpoint, attack, norm, ε, sample count and settings is
taken from the store instead of being measured again, unless `force`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from caat_app.attacks.common import is_batch_dependent, own_gradients
from caat_app.attacks.registry import attack_examples
from caat_app.config import RunConfig
from caat_app.data.splits import load_for_run
from caat_app.errors import CaatError
from caat_app.evaluation.plan import (
    CHECKPOINTS,
    EVAL_BATCH,
    EvalSpec,
    Measurement,
    plan,
    settings_text,
)
from caat_app.models.build import build_for_run
from caat_app.models.saved import load_model_state, needs_base
from caat_app.runs.stored import config_of
from caat_app.training.device import resolve_device

if TYPE_CHECKING:
    from caat_storage import EvalResult, Run, Store


def attack_batch(
    name: str, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str
) -> Tensor:
    """Adversarial examples for one batch by an evaluation attack's name.

    On a batch-statistics model every attack's input gradient treats the batch's
    statistics as constants (`own_gradients`; predictions untouched): through them the
    summed loss's gradient nearly cancels. Training attacks keep autograd's own gradient,
    as the official code does.
    """
    with own_gradients(model):
        return attack_examples(name, model, x, y, eps=eps, norm=norm)


def stratified_order(y: Tensor) -> Tensor:
    """Test indices taking classes in turn: any first N is as balanced as N allows."""
    by_class = [torch.nonzero(y == c).flatten() for c in torch.unique(y)]
    order = []
    for i in range(max(len(idx) for idx in by_class)):
        order += [int(idx[i]) for idx in by_class if i < len(idx)]
    return torch.tensor(order, dtype=torch.long)


def checkpoint_path(run: Run, checkpoint: str) -> Path:
    """Where a run's `best` or `last` checkpoint is; a CaatError if it has none."""
    if checkpoint not in CHECKPOINTS:
        raise CaatError(f"--checkpoint: unknown {checkpoint!r}; choose one of best, last")
    path = Path(run.run_dir) / f"{checkpoint}.pt"
    if not path.is_file():
        raise CaatError(f"run {run.id} has no {checkpoint} checkpoint at {path}")
    return path


def read_checkpoint(run: Run, checkpoint: str, device: Any = "cpu") -> dict[str, Any]:
    """A checkpoint's contents, weights-only, checked to hold model weights; else a
    CaatError saying the file is damaged (a traceback from deep in torch helps nobody).
    """
    path = checkpoint_path(run, checkpoint)
    damaged = f"run {run.id}: its {checkpoint} checkpoint {path} is"
    if path.stat().st_size == 0:
        raise CaatError(f"{damaged} empty (a disk that filled up, or a copy cut short?)")
    try:
        with warnings.catch_warnings():  # a damaged header warns before it fails
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # the unpickler fails on damaged bytes with any of ten types
        raise CaatError(
            f"{damaged} damaged or not a checkpoint caat wrote "
            f"({type(exc).__name__} reading it weights-only)"
        ) from None
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in weights.items()
    ):
        raise CaatError(f"{damaged} not a checkpoint caat wrote: it holds no model weights")
    return state


def load_run_model(
    run: Run, checkpoint: str, device: str = "auto"
) -> tuple[nn.Module, RunConfig, Any, str]:
    """The run's model with a checkpoint's weights (never anything but weights).

    Also says which weights: the epoch and step the checkpoint was saved at, so a result
    measured on an earlier `best` is never taken for one of a later `best`.
    """
    checkpoint_path(run, checkpoint)  # before the data set is loaded
    config = config_of(run)
    dev = resolve_device(device)
    state = read_checkpoint(run, checkpoint, dev)
    built = config
    if config.weights is not None and not needs_base(state):
        built = config.model_copy(update={"weights": None})  # the whole model is in the file
    data = load_for_run(config)
    try:
        model = build_for_run(built, data, dev)
    except CaatError as exc:  # its base weights file moved, or no longer fits
        raise CaatError(f"run {run.id}: {exc}") from None
    where = f"run {run.id}: its {checkpoint} checkpoint ({config.model} on {config.dataset})"
    load_model_state(model, state["model"], state.get("base"), where)
    model.eval()
    weights = f"epoch {state.get('epoch', '?')}, step {state.get('step', '?')}"
    return model, config, data, weights


def accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: str | None,
    *,
    eps: float,
    norm: str,
    should_stop: Callable[[], bool] = lambda: False,
    batch_dependent: bool = False,
) -> float | None:
    """Accuracy on clean inputs (`attack` None) or under an attack, in fixed batches.

    A point the model gets wrong unattacked counts as not robust and is not attacked
    (AutoAttack's convention: robust accuracy never exceeds clean accuracy). A
    `batch_dependent` model (batch statistics in BatchNorm; also recognised from the model
    itself) is attacked and judged on whole fixed batches instead, since removing points
    would change its predictions: the attacks keep every point of the batch in each
    forward pass, and the wrong ones unchanged.
    None when `should_stop` said so between two batches: a partial number is never kept.
    """
    batch_dependent = batch_dependent or is_batch_dependent(model)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, len(y), EVAL_BATCH):
        if should_stop():
            return None
        xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
        with torch.no_grad():
            right = model(xb).argmax(1) == yb
        if attack is not None and eps > 0:
            if batch_dependent:
                adv = attack_batch(attack, model, xb, yb, eps=eps, norm=norm)
                with torch.no_grad():
                    right &= model(adv).argmax(1) == yb
            else:
                idx = right.nonzero().squeeze(1)  # one host sync per batch
                if idx.numel() > 0:
                    adv = attack_batch(attack, model, xb[idx], yb[idx], eps=eps, norm=norm)
                    with torch.no_grad():
                        right[idx] = model(adv).argmax(1) == yb[idx]
        correct += right.sum()
    return int(correct) / max(len(y), 1)


_STORED = (
    "checkpoint",
    "weights",
    "attack",
    "norm",
    "eps",
    "samples",
    "accuracy",
    "seconds",
    "settings",
)


def _test_subset(data: Any, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The first `n` test images of the stratified order (all of them for 0), on the device."""
    order = stratified_order(data.y_test)[:n] if n > 0 else torch.arange(len(data.y_test))
    return data.x_test[order].to(device), data.y_test[order].to(device)


def _stored_results(
    store: Store, run_id: int, checkpoint: str, weights: str
) -> dict[tuple[str, str, float, int, str], EvalResult]:
    """What was measured on these very weights, by what makes two results the same."""
    return {
        (r.attack, r.norm, round(r.eps, 12), r.samples, r.settings): r
        for r in store.evals(run_id, checkpoint=checkpoint)
        if r.weights == weights
    }


def _measure(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    job: Measurement,
    norm: str,
    *,
    batch_dependent: bool,
    should_stop: Callable[[], bool],
) -> tuple[float, float] | None:
    """One measurement from the same seed every time: (accuracy, seconds); None if stopped."""
    torch.manual_seed(0)
    began = time.perf_counter()
    acc = accuracy(
        model,
        x,
        y,
        None if job.attack == "clean" else job.attack,
        eps=job.eps,
        norm=norm,
        should_stop=should_stop,
        batch_dependent=batch_dependent,
    )
    return None if acc is None else (acc, time.perf_counter() - began)


def evaluate_run(
    store: Store,
    run: Run,
    spec: EvalSpec,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[int, int, Measurement], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]] | None:
    """Clean accuracy, then every attack at every ε, then the probes; each stored at once.

    `on_start(index, total, measurement)` comes before each measurement, `on_result(row)`
    after it. Returns every row, or None when stopped (what was finished stays stored).
    """
    assert run.id is not None
    model, config, data, weights = load_run_model(run, spec.checkpoint, spec.device)
    x, y = _test_subset(data, spec.n, next(model.parameters()).device)
    cached = _stored_results(store, run.id, spec.checkpoint, weights)
    jobs = plan(spec)
    results = []
    for index, job in enumerate(jobs):
        if should_stop():
            return None
        if on_start is not None:
            on_start(index, len(jobs), job)
        settings = settings_text(job.attack, job.eps)
        hit = cached.get((job.attack, spec.norm, round(job.eps, 12), len(y), settings))
        row = {
            "checkpoint": spec.checkpoint,
            "weights": weights,
            "attack": job.attack,
            "norm": spec.norm,
            "eps": job.eps,
            "samples": len(y),
            "settings": settings,
            "probe": job.probe,
        }
        if hit is not None and not spec.force:
            row.update(accuracy=hit.accuracy, seconds=hit.seconds, cached=True)
        else:
            measured = _measure(
                model,
                x,
                y,
                job,
                spec.norm,
                batch_dependent=config.bn == "batchstats",
                should_stop=should_stop,
            )
            if measured is None:
                return None
            row.update(accuracy=measured[0], seconds=measured[1], cached=False)
            store.add_evals(run.id, [{k: row[k] for k in _STORED}])
        results.append(row)
        if on_result is not None:
            on_result(row)
    return results
