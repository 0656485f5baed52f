"""`caat bench` at the paper's scale: ResNet-18 and WRN-28-10 at batch 1024, on a GPU.

The paper's recipe (`paper-cifar10-r18`: PGD-10 at 8/255, step 2/255, batch statistics in
BatchNorm) with each model, on synthetic CIFAR-shaped data (`synthetic-cifar`: a step's
cost depends on shapes, not on values, and a benchmark should need no data set). Clean
training, Vanilla AT and CA-AT are timed in interleaved repeats as in the digits bench;
each kind's achieved TFLOP/s and share of the device's peak come from its counted forward
FLOPs (`flops`). The evaluation line times AutoAttack (standard) as `caat eval` runs it,
on the first model after its CA-AT bench steps (a model that learned something, so the
attack has points to work on).
"""

from __future__ import annotations

from typing import Any

import torch

from caat_app.bench.evaluation import autoattack_rate
from caat_app.bench.flops import (
    achieved,
    device_name,
    forward_flops_per_image,
    peak_tflops,
    precision,
    step_passes,
)
from caat_app.bench.training import clean_step, fixed_batches, median_seconds
from caat_app.config import RunConfig, build_config
from caat_app.data.splits import DataSplits, load_dataset
from caat_app.present import format_budget
from caat_app.presets import PRESETS
from caat_app.training.sinks import NullSink
from caat_app.training.trainer import Trainer

PAPER_PRESET = "paper-cifar10-r18"
PAPER_MODELS = ("resnet18", "wrn28-10")
PAPER_BATCH = int(PRESETS[PAPER_PRESET].values["batch_size"])
"""The paper's batch (1024), read from its preset."""
DATASET = "synthetic-cifar"
KINDS = (("clean", "clean training"), ("vanilla", "Vanilla AT"), ("caat", "CA-AT"))


def paper_config(model: str, method: str, **options: Any) -> RunConfig:
    """The paper's recipe with `model` and `method`; `options` override it (dataset, batch
    size, attack steps, device, bf16)."""
    values = {"dataset": DATASET, "epochs": 1, **options}
    return build_config({"preset": PAPER_PRESET, "model": model, "method": method, **values})


def model_steps(
    model: str, data: DataSplits, *, steps: int, repeats: int, options: dict[str, Any]
) -> tuple[dict[str, Any], Trainer]:
    """One model's three kinds of step: time, images/s and TFLOP/s; and its CA-AT trainer."""
    vanilla = Trainer(paper_config(model, "vanilla", **options), NullSink(), data=data)
    caat = Trainer(paper_config(model, "caat", **options), NullSink(), data=data)
    dev, cfg = caat.device, caat.config
    batches = fixed_batches(caat, steps, caat.batch)
    kinds = {
        "clean": lambda xb, yb, lr: clean_step(vanilla, xb, yb, lr),
        "vanilla": vanilla.train_step,
        "caat": caat.train_step,
    }
    per_step = median_seconds(kinds, batches, repeats, dev)
    forward = forward_flops_per_image(caat.model, caat.x_train[:2])
    prec = precision(cfg, dev)
    peak = peak_tflops(device_name(dev), prec)
    timed = {}
    for kind, seconds in per_step.items():
        rate = caat.batch / seconds
        passes = step_passes(kind, cfg, data.num_classes)
        timed[kind] = {
            "ms_per_step": 1000 * seconds,
            "images_per_sec": rate,
            **achieved(passes, forward, rate, peak),
        }
    report = {
        "model": model,
        "parameters": sum(p.numel() for p in caat.model.parameters()),
        "forward_flops": forward,
        "precision": prec,
        "peak_tflops": peak,
        "steps": timed,
        "ratio_caat_vs_vanilla": per_step["caat"] / per_step["vanilla"],
    }
    return report, caat


def paper_bench(
    *,
    models: tuple[str, ...] = PAPER_MODELS,
    batch_size: int | None = None,
    attack_steps: int = 10,
    steps: int = 30,
    repeats: int = 5,
    device: str = "auto",
    bf16: bool = False,
    eval_n: int = 1000,
    dataset: str = DATASET,
    data: DataSplits | None = None,
) -> dict[str, Any]:
    """Time each model's steps at the paper's batch (or `batch_size`), then AutoAttack on
    `eval_n` test images of the first (0: no evaluation line); a JSON-able report."""
    options = {
        "dataset": dataset,
        "batch_size": batch_size or PAPER_BATCH,
        "attack_steps": attack_steps,
        "device": device,
        "bf16": bf16,
    }
    paper_config(models[0], "caat", **options)  # a bad value fails before any work
    data = data if data is not None else load_dataset(dataset)
    results, evaluation, dev = [], None, torch.device("cpu")
    for index, model in enumerate(models):
        report, trainer = model_steps(model, data, steps=steps, repeats=repeats, options=options)
        results.append(report)
        dev = trainer.device
        if index == 0 and eval_n > 0:
            cfg = trainer.config
            evaluation = autoattack_rate(
                trainer.model, data, eval_n, eps=cfg.eps, norm=cfg.norm, bn=cfg.bn
            )
            evaluation["trained"] = f"{model} after its CA-AT bench steps"
        del trainer
        _release(dev)
    cfg = paper_config(models[0], "caat", **options)
    return {
        "device": str(dev),
        "device_name": device_name(dev),
        "torch": torch.__version__,
        "dataset": dataset,
        "preset": PAPER_PRESET,
        "batch_size": options["batch_size"],
        "attack": f"pgd-{attack_steps} {cfg.norm} eps={format_budget(cfg.eps)}",
        "bn": cfg.bn,
        "models": results,
        "evaluation": evaluation,
        "repeats": repeats,
        "steps_per_repeat": steps,
    }


def _release(device: torch.device) -> None:
    """Hand a finished model's memory back, so the next model has the whole GPU."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _flops_text(step: dict[str, Any]) -> str:
    share = step["peak_share"]
    tail = "" if share is None else f" = {100 * share:.1f}% of peak"
    return f"{step['forward_equivalents']} forward-equivalents, {step['tflops']:.3g} TFLOP/s{tail}"


def paper_lines(report: dict[str, Any]) -> list[str]:
    """The report as a person reads it: a heading, per model its steps, the evaluation."""
    lines = [
        f"caat bench, paper scale: {report['preset']} recipe on {report['dataset']} "
        f"(synthetic data), batch {report['batch_size']}, {report['attack']}, BN "
        f"{report['bn']}, {report['device']} ({report['device_name']})"
    ]
    for model in report["models"]:
        peak = model["peak_tflops"]
        peak_text = "peak not known" if peak is None else f"peak {peak:g} TFLOP/s"
        lines.append(
            f"  {model['model']}: {model['forward_flops'] / 1e9:.3g} GFLOP per image forward "
            f"(counted), {model['precision']}, {peak_text}"
        )
        for kind, label in KINDS:
            step = model["steps"][kind]
            lines.append(
                f"    {label}: {_rate(step['images_per_sec'])} images / s "
                f"({step['ms_per_step']:,.1f} ms / step), {_flops_text(step)}"
            )
        lines.append(f"    CA-AT / Vanilla AT: {model['ratio_caat_vs_vanilla']:.3f}×")
    ev = report["evaluation"]
    if ev is not None:
        lines.append(
            f"  evaluation, AutoAttack (standard): {_rate(ev['images_per_sec'])} images / s "
            f"({ev['images']} test images in {ev['seconds']:.2f} s; {ev['trained']}: "
            f"{100 * ev['accuracy']:.1f}% robust, {100 * ev['clean']:.1f}% clean)"
        )
    return lines
