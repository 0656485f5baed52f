"""`caat bench --gpu-check OUT`: a lent GPU machine checks caat end to end, without data sets.

Five parts, each timed and judged on its own, so one that fails (an out-of-memory WRN)
leaves the others' figures standing:

- `bench-r18`, `bench-wrn28-10`: clean, Vanilla AT and CA-AT steps of ResNet-18 and
  WRN-28-10 at the paper's batch on synthetic CIFAR-shaped data (images/s, achieved
  TFLOP/s and share of the device's peak; `paper_scale`);
- `train`: a 2-epoch `paper-cifar10-r18` run on `synthetic-cifar`, recorded in a fresh
  store in OUT and trained by `execute_run`, what the worker and `caat train` run;
- `evaluate`: AutoAttack (standard) on 1 000 test images of that run's best checkpoint,
  by `execute_eval`, what an evaluation worker and `caat eval` run;
- `sync-debug`: `torch.cuda.set_sync_debug_mode("error")` around gathering a batch, one
  CA-AT training step and one evaluation PGD, each warmed up first; on the CPU it is
  skipped (there is nothing to synchronise with) and says so.

On CUDA the runs use bf16 autocast (the fast path). OUT/gpu-check.json holds the device,
the versions, each part's status, seconds and figures, and is rewritten after every part,
so a check stopped midway leaves what it had. `tiny` shrinks every size (a small CNN,
small batches, `synthetic-cifar-tiny`, 20 images attacked) for a CPU check in seconds.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from caat_app.bench.flops import device_name
from caat_app.bench.paper_scale import PAPER_PRESET, paper_bench, paper_config
from caat_app.data.splits import DataSplits, load_dataset
from caat_app.errors import CaatError
from caat_app.training.device import resolve_device

RESULT_FILE = "gpu-check.json"
STORE_FILE = "caat.db"
PARTS = ("bench-r18", "bench-wrn28-10", "train", "evaluate", "sync-debug")


class CheckFailed(Exception):
    """A part ran but its outcome is wrong (a run that did not finish, say)."""


@dataclass(frozen=True)
class Sizes:
    """How big each part is."""

    dataset: str
    bench_models: tuple[str, str]  # stand-ins for ResNet-18 and WRN-28-10 when tiny
    bench_batch: int | None  # None: the paper's (1024)
    bench_steps: int
    bench_repeats: int
    attack_steps: int
    run: dict[str, Any] = field(default_factory=dict)  # the run's options over the preset
    eval_n: int = 1000
    eval_eps: float | None = None  # None: the run's own budget
    sync_batch: int = 256


FULL = Sizes("synthetic-cifar", ("resnet18", "wrn28-10"), None, 4, 2, 10, {"epochs": 2})
# Tiny: AutoAttack's budgets are fixed (Square alone asks 5 000 queries of every point it
# meets), so on a CPU it is run at ε = 0.5, where APGD-CE breaks every point and the later
# members have none left; the full check runs them all at the run's 8/255.
TINY = Sizes(
    "synthetic-cifar-tiny",
    ("cnn", "linear"),
    16,
    1,
    1,
    2,
    {"epochs": 2, "model": "cnn", "batch_size": 64, "attack_steps": 2, "eval_steps": 2},
    eval_n=20,
    eval_eps=0.5,
    sync_batch=16,
)


@dataclass
class Context:
    """What the parts share: where, on what, how big, and the run the train part made."""

    folder: Path
    device: str
    sizes: Sizes
    bf16: bool
    run_id: int | None = None
    loaded: DataSplits | None = None

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.folder.resolve() / STORE_FILE}"

    def data(self) -> DataSplits:
        """The synthetic data set, generated once for the parts that train in this process."""
        if self.loaded is None:
            self.loaded = load_dataset(self.sizes.dataset)
        return self.loaded


def check_folder(out: Path) -> Path:
    """OUT as a folder for a new check (made if missing), or a CaatError in one line."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise CaatError(f"--gpu-check: {out} is a file; give a folder for the check's results")
    for name in (RESULT_FILE, STORE_FILE):
        if (out / name).exists():
            raise CaatError(f"--gpu-check: {out} already holds a check ({name}); give a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CaatError(f"--gpu-check: cannot make {out}: {exc.strerror or exc}") from None
    return out


def gpu_check(
    out: Path, *, device: str = "auto", tiny: bool = False, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run every part, writing OUT/gpu-check.json after each; `say` gets one line per part.

    Bad input (OUT a file, a device that is not there) is a CaatError before any work.
    """
    dev = resolve_device(device)
    folder = check_folder(out)
    ctx = Context(folder, str(dev), TINY if tiny else FULL, bf16=dev.type == "cuda")
    summary: dict[str, Any] = {
        "device": str(dev),
        "device_name": device_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": tiny,
        "bf16": ctx.bf16,
        "sizes": asdict(ctx.sizes),
        "parts": {},
    }
    began = time.perf_counter()
    parts: dict[str, Callable[[Context], dict[str, Any]]] = {
        "bench-r18": lambda c: _bench(c, c.sizes.bench_models[0]),
        "bench-wrn28-10": lambda c: _bench(c, c.sizes.bench_models[1]),
        "train": _train,
        "evaluate": _evaluate,
        "sync-debug": _sync_debug,
    }
    for name, part in parts.items():
        summary["parts"][name] = result = _run_part(part, ctx, dev)
        say(f"gpu-check: {name} {result['status']} in {result['seconds']:.1f} s{_brief(result)}")
        summary["seconds"] = time.perf_counter() - began
        summary["passed"] = all(p["status"] != "failed" for p in summary["parts"].values())
        _write(folder, summary)
    return summary


def _run_part(
    part: Callable[[Context], dict[str, Any]], ctx: Context, dev: torch.device
) -> dict[str, Any]:
    """A part's figures, with its status and seconds; an exception is its failure."""
    start = time.perf_counter()
    try:
        figures = part(ctx)
        status = figures.pop("status", "passed")
    except Exception as exc:  # any failure is the part's result, not the check's end
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        figures = {"error": f"{type(exc).__name__}: {first}"}
        if not isinstance(exc, CheckFailed):
            figures["traceback"] = traceback.format_exc()
        status = "failed"
    if dev.type == "cuda":
        try:  # an error the part left on the device shows here, and fails the part
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
        except RuntimeError as exc:
            status = "failed"
            figures.setdefault("error", f"{type(exc).__name__}: {exc}".splitlines()[0])
    return {"status": status, "seconds": time.perf_counter() - start, **figures}


def _brief(result: dict[str, Any]) -> str:
    """The part's headline figure for its progress line."""
    if "error" in result:
        return f": {result['error']}"
    if "summary" in result:
        return f": {result['summary']}"
    return f": {result['reason']}" if "reason" in result else ""


def _write(folder: Path, summary: dict[str, Any]) -> None:
    """The summary, replaced whole (written aside, then renamed) so it is never half a file."""
    path = folder / RESULT_FILE
    aside = path.with_suffix(".json.tmp")
    aside.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    aside.replace(path)


def _bench(ctx: Context, model: str) -> dict[str, Any]:
    """One model's three kinds of step at the paper's batch; its achieved TFLOP/s."""
    sizes = ctx.sizes
    report = paper_bench(
        models=(model,),
        batch_size=sizes.bench_batch,
        attack_steps=sizes.attack_steps,
        steps=sizes.bench_steps,
        repeats=sizes.bench_repeats,
        device=ctx.device,
        bf16=ctx.bf16,
        eval_n=0,
        dataset=sizes.dataset,
        data=ctx.data(),
    )
    timed = report["models"][0]
    rates = {kind: step["images_per_sec"] for kind, step in timed["steps"].items()}
    if not all(rate > 0 for rate in rates.values()):
        raise CheckFailed(f"{model}: a step kind timed at no images per second: {rates}")
    caat = timed["steps"]["caat"]
    share = "" if caat["peak_share"] is None else f" = {100 * caat['peak_share']:.1f}% of peak"
    return {
        "summary": (
            f"{model} batch {report['batch_size']} {timed['precision']}: "
            + ", ".join(f"{kind} {rate:,.0f}" for kind, rate in rates.items())
            + f" images/s; CA-AT {caat['tflops']:.3g} TFLOP/s{share}, "
            f"{timed['ratio_caat_vs_vanilla']:.3f}× Vanilla AT"
        ),
        "batch_size": report["batch_size"],
        "attack": report["attack"],
        **timed,
    }


def _run_config(ctx: Context) -> dict[str, Any]:
    """The run's options: the paper's recipe on the synthetic data, sized by the check."""
    return {
        "preset": PAPER_PRESET,
        "name": "gpu-check",
        "dataset": ctx.sizes.dataset,
        "device": ctx.device,
        "bf16": ctx.bf16,
        **ctx.sizes.run,
    }


def _train(ctx: Context) -> dict[str, Any]:
    """The run through the worker's own path, into a fresh store in OUT; its epochs."""
    from caat_app.config import build_config
    from caat_app.runs.manage import create_run
    from caat_app.runs.worker import StopFlag, execute_run
    from caat_storage import RunStatus, Store

    cfg = build_config(_run_config(ctx))
    with Store.open(ctx.store_url) as store:
        ctx.run_id = run_id = create_run(store, cfg)
        status = execute_run(store, run_id, StopFlag())
        epochs = [
            {k: getattr(e, k) for k in _EPOCH_FIELDS} for e in sorted(store.epochs(run_id), key=_ep)
        ]
    if status != RunStatus.FINISHED or len(epochs) != cfg.epochs:
        raise CheckFailed(f"run {run_id} ended {status} after {len(epochs)} of {cfg.epochs} epochs")
    last = epochs[-1]
    return {
        "summary": (
            f"run {run_id} ({cfg.model}, batch {cfg.batch_size}) {cfg.epochs} epochs, last "
            f"{last['epoch_seconds']:.1f} s at {last['images_per_sec']:,.0f} images/s; test "
            f"{100 * last['test_clean']:.1f}% clean, {100 * last['test_adv']:.1f}% PGD"
        ),
        "run": run_id,
        "store": ctx.store_url,
        "config": cfg.model_dump(mode="json"),
        "epochs": epochs,
    }


_EPOCH_FIELDS = (
    "epoch",
    "epoch_seconds",
    "images_per_sec",
    "train_clean",
    "train_adv",
    "val_clean",
    "val_adv",
    "test_clean",
    "test_adv",
)


def _ep(row: Any) -> int:
    return int(row.epoch)


def _evaluate(ctx: Context) -> dict[str, Any]:
    """AutoAttack (standard) on the run's best checkpoint, as `caat eval` measures it."""
    from caat_app.evaluation.plan import eval_spec, plan
    from caat_app.runs.stored import config_of
    from caat_app.runs.worker import StopFlag, execute_eval
    from caat_storage import RunStatus, Store

    if ctx.run_id is None:
        raise CheckFailed("no run to evaluate: the train part recorded none")
    with Store.open(ctx.store_url) as store:
        run = store.get_run(ctx.run_id)
        assert run is not None
        eps = ctx.sizes.eval_eps or config_of(run).eps
        spec = eval_spec(attacks="autoattack", budgets=[eps], n=ctx.sizes.eval_n, device=ctx.device)
        job = store.create_eval_job(ctx.run_id, spec.to_json(), total=len(plan(spec)))
        status, rows = execute_eval(store, job, StopFlag())
    if status != RunStatus.FINISHED:
        raise CheckFailed(f"evaluation {job} ended {status}")
    by_attack = {row["attack"]: row for row in rows}
    clean, robust = by_attack["clean"], by_attack["autoattack"]
    if not 0.0 <= robust["accuracy"] <= clean["accuracy"]:
        raise CheckFailed(f"robust accuracy {robust['accuracy']} above clean {clean['accuracy']}")
    rate = robust["samples"] / robust["seconds"]
    return {
        "summary": (
            f"AutoAttack (standard) on {robust['samples']} images in {robust['seconds']:.1f} s "
            f"= {rate:,.1f} images/s; {100 * robust['accuracy']:.1f}% robust, "
            f"{100 * clean['accuracy']:.1f}% clean"
        ),
        "job": job,
        "images": robust["samples"],
        "seconds_attack": robust["seconds"],
        "images_per_sec": rate,
        "robust": robust["accuracy"],
        "clean": clean["accuracy"],
        "eps": eps,
    }


def _sync_debug(ctx: Context) -> dict[str, Any]:
    """No host-device synchronisation in a batch, a training step, an evaluation attack."""
    if torch.device(ctx.device).type != "cuda":
        return {"status": "skipped", "reason": "skipped: cpu (CUDA synchronisation only)"}
    from caat_app.evaluation.runner import attack_batch
    from caat_app.training.sinks import NullSink
    from caat_app.training.trainer import Trainer

    sizes = ctx.sizes
    cfg = paper_config(
        sizes.run.get("model", "resnet18"),
        "caat",
        dataset=sizes.dataset,
        batch_size=sizes.sync_batch,
        attack_steps=sizes.attack_steps,
        device=ctx.device,
        bf16=ctx.bf16,
    )
    trainer = Trainer(cfg, NullSink(), data=ctx.data())
    model, batches = trainer.model, trainer.batches()
    x, y = trainer.x_test[: sizes.sync_batch], trainer.y_test[: sizes.sync_batch]

    def attack() -> None:
        model.eval()
        attack_batch("pgd", model, x, y, eps=cfg.eps, norm=cfg.norm)
        model.train()

    xb, yb = next(batches)  # warm-up: lazy initialisation, cuDNN autotuning
    trainer.train_step(xb, yb, 0.01)
    attack()
    dev = trainer.device
    checks = {
        "batch": _without_sync(lambda: next(batches), dev),
        "step": _without_sync(lambda: trainer.train_step(xb, yb, 0.01), dev),
        "attack": _without_sync(attack, dev),
    }
    failed = [name for name, outcome in checks.items() if outcome != "passed"]
    return {
        "status": "failed" if failed else "passed",
        "summary": "; ".join(f"{name} {outcome}" for name, outcome in checks.items()),
        "checks": checks,
        "model": cfg.model,
        "batch_size": cfg.batch_size,
    }


def _without_sync(work: Callable[[], Any], device: torch.device) -> str:
    """ "passed", or "failed: ..." naming the synchronising call CUDA's debug mode caught
    and the last line of caat's own code on the way to it."""
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        work()
        outcome = "passed"
    except RuntimeError as exc:
        ours = [f for f in traceback.extract_tb(exc.__traceback__) if "caat_app" in f.filename]
        where = f" (at {ours[-1].filename}:{ours[-1].lineno} {ours[-1].line})" if ours else ""
        outcome = "failed: " + (str(exc).strip().splitlines() or [""])[0] + where
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    return outcome
