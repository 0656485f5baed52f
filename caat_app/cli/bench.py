"""`caat bench`: how fast training, evaluation, the dashboard's start-up and a big store's
run list are, and its report.

The benchmarks (torch) are imported inside the command, never when the CLI starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from caat_app.cli.base import out
from caat_app.cli.options import JsonOption
from caat_app.errors import CaatError

SECTIONS = ("training", "evaluation", "dashboard-start", "store-size", "paper-scale")
"""What `caat bench` measures, in order; `--only` picks some."""
GPU_ONLY = frozenset({"paper-scale"})
"""Sections measured by default only on a GPU (on a CPU they take hours); `--only` asks."""
DIGITS_BATCH = 128
PaperModelsOption = typer.Option(
    "resnet18,wrn28-10", help="paper-scale: the models timed (comma list)"
)
GpuCheckOption = typer.Option(
    None,
    "--gpu-check",
    help="check a GPU end to end without data sets (bench, a 2-epoch run into a store, "
    "AutoAttack, sync-debug); results in this folder's gpu-check.json",
)
OnlyOption = typer.Option(
    None,
    "--only",
    help=f"a comma list of: {', '.join(SECTIONS)} (default: all; paper-scale on a GPU only)",
)
TinyOption = typer.Option(False, "--tiny", help="with --gpu-check: every part tiny (CPU)")


def bench(
    model: str = typer.Option("cnn", help="model to time"),
    peft: str | None = typer.Option(
        None,
        help="a transformer's fine-tuning mode (full, head, adapter, lora): times its Vanilla "
        "AT and CA-AT steps (images/s, peak memory) on synthetic inputs instead of digits",
    ),
    bf16: bool = typer.Option(
        False, help="bf16 autocast (CUDA) in the --peft and paper-scale steps"
    ),
    batch_size: int | None = typer.Option(
        None, min=2, help=f"default {DIGITS_BATCH}; paper-scale: the paper's 1024"
    ),
    attack_steps: int = typer.Option(10, min=1),
    steps: int = typer.Option(30, min=1, help="timed steps per repeat"),
    repeats: int = typer.Option(5, min=1, help="interleaved repeats (the median is reported)"),
    device: str = typer.Option("auto"),
    layer_every: int = typer.Option(20, min=1, help="per-layer conflict timed every N steps"),
    eval_n: int = typer.Option(200, min=10, help="test images of the evaluation line"),
    eval_epochs: int = typer.Option(10, min=1, help="epochs trained before it is attacked"),
    only: str | None = OnlyOption,
    store_runs: int = typer.Option(100_000, min=1, help="runs in the store-size store"),
    paper_models: str = PaperModelsOption,
    gpu_check: Path | None = GpuCheckOption,
    tiny: bool = TinyOption,
    as_json: bool = JsonOption,
) -> None:
    """Per-step time of clean training, Vanilla AT and CA-AT, the cost of logging and of
    per-layer conflict (--layer-stats), the evaluation's images per second (PGD-20, fast
    AutoAttack), the dashboard's start-up, and `caat runs` and the run list on a store
    of 100 000 runs (seconds and peak memory). With --peft: a transformer's Vanilla AT and
    CA-AT fine-tuning steps instead. On a GPU also paper-scale: ResNet-18 and WRN-28-10 at
    batch 1024, achieved TFLOP/s, AutoAttack's images/s. --gpu-check OUT: the GPU check."""
    if gpu_check is not None or tiny:
        _gpu_check(gpu_check, device=device, tiny=tiny)
        return
    sections = _sections(only, peft, on_gpu=_on_gpu(device))
    timing = {
        "model": model,
        "batch_size": batch_size or DIGITS_BATCH,
        "attack_steps": attack_steps,
        "steps": steps,
        "repeats": repeats,
        "device": device,
    }
    report = _training(timing, peft=peft, bf16=bf16, layer_every=layer_every, sections=sections)
    if "evaluation" in sections:
        from caat_app.bench.evaluation import eval_bench

        report["evaluation"] = eval_bench(n=eval_n, epochs=eval_epochs, device=device)
    report |= _other_sections(sections, repeats=repeats, store_runs=store_runs)
    if "paper-scale" in sections:
        paper = {**timing, "batch_size": batch_size, "bf16": bf16, "eval_n": eval_n}
        report["paper_scale"] = _paper_scale(paper, paper_models)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_report(out, report)


def _training(
    timing: dict[str, Any], *, peft: str | None, bf16: bool, layer_every: int, sections: set[str]
) -> dict[str, Any]:
    """The steps of `--model` on digits, or with `--peft` a transformer's fine-tuning steps
    (nothing when the training section is not asked for)."""
    if "training" not in sections:
        return {}
    if peft is None:
        from caat_app.bench.training import run_bench

        return run_bench(**timing, layer_every=layer_every)
    from caat_app.bench.peft import peft_bench

    return {"peft": peft_bench(**timing, peft=peft, bf16=bf16)}


def _other_sections(sections: set[str], *, repeats: int, store_runs: int) -> dict[str, Any]:
    """The dashboard's start-up and the big store's run list, when asked for."""
    report: dict[str, Any] = {}
    if "dashboard-start" in sections:
        from caat_app.bench.startup import dashboard_startup

        report["dashboard_start"] = dashboard_startup(repeats=repeats)
    if "store-size" in sections:
        from caat_app.bench.store_size import store_size_bench

        report["store_size"] = store_size_bench(runs=store_runs, repeats=repeats)
    return report


def _paper_scale(timing: dict[str, Any], models: str) -> dict[str, Any]:
    """ResNet-18 and WRN-28-10 (or --paper-models) at the paper's batch (or --batch-size)."""
    from caat_app.bench.paper_scale import paper_bench

    options = {k: v for k, v in timing.items() if k != "model"}
    return paper_bench(models=_models(models), **options)


def _gpu_check(out: Path | None, *, device: str, tiny: bool) -> None:
    """`--gpu-check OUT`: one line per part on stderr, the JSON's place on stdout; exit 1 if
    a part failed."""
    if out is None:
        raise CaatError("--tiny: only with --gpu-check OUT")
    from caat_app.bench.gpu_check import RESULT_FILE, gpu_check

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    summary = gpu_check(out, device=device, tiny=tiny, say=say)
    verdict = "passed" if summary["passed"] else "FAILED"
    out_file = Path(out).expanduser() / RESULT_FILE
    print(
        f"gpu check {verdict} in {summary['seconds']:.0f} s on {summary['device_name']}: {out_file}"
    )
    if not summary["passed"]:
        raise typer.Exit(1)


def _on_gpu(device: str) -> bool:
    """Whether the bench runs on a GPU (`auto` finds one, or `cuda` asks for it)."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return bool(torch.cuda.is_available())


def _models(text: str) -> tuple[str, ...]:
    """The --paper-models list, each a known model, or a one-line error."""
    from caat_app.models.registry import MODELS

    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise CaatError(f"--paper-models: unknown {text!r}; choose from {', '.join(MODELS)}")
    return names


def _sections(only: str | None, peft: str | None = None, *, on_gpu: bool = False) -> set[str]:
    """The sections `--only` names (without it: all, the GPU-only ones on a GPU only, or only
    training with `--peft`), or a one-line error."""
    if only is None:
        if peft is not None:
            return {"training"}
        return set(SECTIONS) if on_gpu else set(SECTIONS) - GPU_ONLY
    chosen = {part.strip() for part in only.split(",") if part.strip()}
    unknown = sorted(chosen - set(SECTIONS))
    if unknown or not chosen:
        raise CaatError(f"--only: unknown {only!r}; choose from {', '.join(SECTIONS)}")
    return chosen


def print_report(console: Console, report: dict[str, Any]) -> None:
    """The report as a person reads it: a table of steps, then one line per other measure."""
    if "ms_per_step" in report:
        _print_steps(console, report)
    if "peft" in report:
        from caat_app.bench.peft import peft_lines

        for line in peft_lines(report["peft"]):
            console.print(Text(line))
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
    if "store_size" in report:
        from caat_app.bench.store_size import store_size_lines

        for line in store_size_lines(report["store_size"]):
            console.print(Text(line))
    if "paper_scale" in report:
        from caat_app.bench.paper_scale import paper_lines

        for line in paper_lines(report["paper_scale"]):
            console.print(Text(line))


def _print_steps(console: Console, report: dict[str, Any]) -> None:
    """The training section: the three kinds of step, logging and per-layer conflict."""
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
    if "layer_stats" in report:
        layers = report["layer_stats"]
        console.print(
            f"per-layer conflict every {layers['every']} steps ({layers['layers']} layers): "
            f"{layers['ms_per_step']:.3f} ms per step = {100 * layers['overhead']:.2f}% of a "
            f"CA-AT step ({layers['caat_ms_per_step_without']:.2f} ms without, "
            f"{layers['caat_ms_per_step_with']:.2f} ms with, logging included)"
        )
