"""What an experiment costs on one GPU, before a GPU-hour is spent: a stated model.

Torch-free and closed-form. Work is counted in forward-equivalents (one forward pass of
one image; a backward that computes the weights' gradients costs about two, so a
forward+backward is 3; an attack step needs only the input's gradient, which skips the
weights' half of the backward, so it costs about 2):

- A training image under PGD-k costs 3 (clean forward+backward, g_c) + 2k (each attack
  step: a forward and an input-gradient backward) + 3 (adversarial forward+backward,
  g_a) = 2k + 6 (26 for PGD-10). TRADES adds a no-grad clean forward for its attack's
  objective (+1); every loss but CE also backpropagates g_a through the clean logits (+2).
- Each epoch measures clean and PGD accuracy on `eval_n` validation and test images:
  2·eval_steps + 2 per image.
- CA-AT adds its projection, a few passes over the P flat parameters: 8·P FLOP per step.
- Evaluations are counted as an upper bound, every image attacked by every attack
  (batch-statistics models do attack whole batches): see `attack_passes`.

A forward-equivalent costs 2·MAC FLOP (MACs at 32×32 below, scaled by image area), done
at an assumed share of a reference GPU's peak; or, with a `caat bench --json` report of
the same model and data set, at the measured speed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caat_app.attacks.registry import ATTACKS
from caat_app.data.registry import DATASETS
from caat_app.errors import CaatError
from caat_app.evaluation.plan import EvalSpec, plan
from caat_app.method.registry import LOSSES

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_app.paper.scale import Plan

GMAC_32 = {
    "resnet18": 0.56,
    "resnet34": 1.16,
    "wrn28-10": 5.25,
    "cnn": 0.0025,
    "linear": 3.1e-5,
    "vit-micro": 0.015,  # 65 tokens × 4 blocks of width 64
    # The transformers' published counts at 224 × 224 (ViT-B/16 17.6, Swin-T 4.5, …),
    # scaled to 32 × 32 by area like the rest.
    "vit-b16": 17.6 / 49,
    "vit-s16": 4.6 / 49,
    "vit-ti16": 1.3 / 49,
    "swin-t": 4.5 / 49,
    "swin-s": 8.7 / 49,
    "swin-b": 15.4 / 49,
}
"""Forward multiply-accumulates of one 32×32 image, in GMAC."""
PARAMS_M = {
    "resnet18": 11.17,
    "resnet34": 21.28,
    "wrn28-10": 36.48,
    "cnn": 0.024,
    "linear": 0.031,
    "vit-micro": 0.2,
    # Trainable with adapters (reduction 8) and a 200-class head; the frozen rest is
    # outside the flat buffers.
    "vit-b16": 1.9,
    "vit-s16": 0.5,
    "vit-ti16": 0.15,
    "swin-t": 0.7,
    "swin-s": 1.1,
    "swin-b": 1.8,
}
"""Trainable parameters, in millions (for CA-AT's flat-gradient arithmetic)."""
CAAT_FLAT_FLOP = 8
"""FLOP per parameter and step CA-AT adds: its coefficients' reductions and one axpy."""


@dataclass(frozen=True)
class DataSize:
    """Images per split (training after the validation split is held out) and image side."""

    train: int
    val: int
    test: int
    side: int


DATA_SIZES = {
    "digits": DataSize(1257, 270, 270, 8),
    "mnist": DataSize(55_000, 5_000, 10_000, 28),
    "cifar10": DataSize(45_000, 5_000, 10_000, 32),
    "cifar100": DataSize(45_000, 5_000, 10_000, 32),
    # The official splits, 10 % of training held out for validation, at 224 × 224.
    "cub200": DataSize(5_394, 600, 5_794, 224),
    "dogs": DataSize(10_800, 1_200, 8_580, 224),
}
AUTOATTACK = {
    "autoattack": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "autoattack-fast": ("apgd-ce", "apgd-t"),
}
"""The members each AutoAttack version runs, in order (as `caat_app.attacks.autoattack`)."""


@dataclass(frozen=True)
class ReferenceGpu:
    """The GPU an analytic estimate assumes, and the share of its peak a run achieves."""

    name: str = "A100"
    peak_tflops: float = 312.0
    utilisation: float = 0.35

    @property
    def flops(self) -> float:
        return self.peak_tflops * 1e12 * self.utilisation

    @property
    def text(self) -> str:
        return f"{self.name}, {self.utilisation:.0%} of {self.peak_tflops:g} bf16 TFLOP/s"


def forward_flop(model: str, dataset: str, image_size: int | None = None) -> float:
    """FLOP of one forward pass of one image (MACs at 32×32 scaled by the image's area)."""
    side = image_size or DATA_SIZES[dataset].side
    return 2e9 * GMAC_32[model] * (side / 32) ** 2


def _targets(name: str, classes: int) -> int:
    settings = ATTACKS[name].settings(1.0)
    return min(int(settings.get("target_classes", 1)), classes - 1)


def training_iterations(attack: str, steps: int, classes: int) -> int:
    """Forward+backward passes the training attack makes per image: steps × targets."""
    reads = ATTACKS[attack].training or ()
    return (steps if "steps" in reads else 1) * _targets(attack, classes)


def train_passes(cfg: RunConfig, classes: int) -> int:
    """Forward-equivalents per training image and step (see the module's model)."""
    k = training_iterations(cfg.attack, cfg.attack_steps, classes)
    extra = (1 if LOSSES[cfg.loss].objective else 0) + (2 if cfg.loss != "ce" else 0)
    # Frozen weights (PEFT) need no weight gradients: g_c and g_a still backpropagate
    # through the whole backbone to reach the adapters, at an attack step's cost (2).
    grads = 3 if cfg.peft == "full" else 2
    return grads + 2 * k + grads + extra


def _kept(cfg: RunConfig, n: int) -> int:
    """Images of a split left after `labels` (classes are about equally frequent)."""
    classes = DATASETS[cfg.dataset].classes
    return n if cfg.labels is None or not classes else n * len(cfg.labels) // classes


def attack_passes(name: str, classes: int) -> int:
    """Forward-equivalents per image of an evaluation attack, final judging forward included.

    PGD/MI-FGSM-s: 2s + 1; FGSM 3; APGD: 2·steps per target + 1; FAB: steps·(2 + 2K) (a
    forward, K class gradients, a check), FAB-T: 4 per step and target; Square: one
    forward per query; AutoAttack: its members' sum.
    """
    if name in AUTOATTACK:
        return sum(attack_passes(m, classes) - 1 for m in AUTOATTACK[name]) + 1
    attack = ATTACKS[name]
    settings = attack.settings(1.0)
    family = attack.impl.rpartition(":")[0].rpartition(".")[2]
    steps = int(settings.get("steps", 1))
    targets = _targets(name, classes) if attack.fixed.get("targeted") else 1
    if family == "fab":
        per_step = 4 if attack.fixed.get("targeted") else 2 + 2 * classes
        return targets * steps * per_step + 1
    if family == "square":
        return int(settings["queries"]) + 1
    return targets * 2 * steps + 1


def _split(n: int, size: int) -> int:
    return size if n <= 0 else min(n, size)


def train_images(cfg: RunConfig) -> int:
    """Images a run trains on: every epoch's full batches (the last partial one is dropped)."""
    train = _kept(cfg, DATA_SIZES[cfg.dataset].train)
    batch = min(cfg.batch_size, train)
    return cfg.epochs * (train // batch) * batch


def measure_forward_equivalents(cfg: RunConfig) -> float:
    """The per-epoch accuracy checks of a run: clean and PGD on validation and test."""
    data = DATA_SIZES[cfg.dataset]
    measured = _split(cfg.eval_n, _kept(cfg, data.val)) + _split(cfg.eval_n, _kept(cfg, data.test))
    return cfg.epochs * measured * (2 * cfg.eval_steps + 2)


def train_forward_equivalents(cfg: RunConfig) -> float:
    """A run's training work: its steps' images and its per-epoch measurements."""
    passes = train_passes(cfg, _classes(cfg))
    return train_images(cfg) * passes + measure_forward_equivalents(cfg)


def _classes(cfg: RunConfig) -> int:
    return len(cfg.labels) if cfg.labels else DATASETS[cfg.dataset].classes


def eval_forward_equivalents(spec: EvalSpec, cfg: RunConfig) -> float:
    """An evaluation's work: each planned measurement (probes too) on its images."""
    classes = _classes(cfg)
    images = _split(spec.n, _kept(cfg, DATA_SIZES[cfg.dataset].test))
    return sum(
        images * (1 if m.attack == "clean" else attack_passes(m.attack, classes))
        for m in plan(spec)
    )


def flat_flop(cfg: RunConfig) -> float:
    """CA-AT's projection over the run: 8·P FLOP per step (Vanilla AT: none counted)."""
    if cfg.method != "caat":
        return 0.0
    train = _kept(cfg, DATA_SIZES[cfg.dataset].train)
    steps = cfg.epochs * (train // min(cfg.batch_size, train))
    return steps * CAAT_FLAT_FLOP * PARAMS_M[cfg.model] * 1e6


@dataclass(frozen=True)
class Bench:
    """A saved `caat bench --json` report: measured images per second on one machine."""

    model: str
    dataset: str
    device: str
    batch_size: int
    attack_steps: int
    train_ips: Mapping[str, float]
    pgd_ips: float | None

    def matches(self, cfg: RunConfig) -> bool:
        return self.model == cfg.model and self.dataset == cfg.dataset

    @property
    def text(self) -> str:
        return (
            f"caat bench on {self.device}: {self.model} on {self.dataset}, batch "
            f"{self.batch_size}, PGD-{self.attack_steps}"
        )


def read_bench(path: Path) -> Bench:
    """A `caat bench --json` report from a file, or a one-line CaatError."""
    try:
        data = json.loads(Path(path).read_text())
        steps = re.match(r"pgd-(\d+)", str(data["attack"]))
        evaluation = data.get("evaluation", {})
        same = evaluation.get("model") == data["model"]
        pgd = evaluation.get("attacks", {}).get("pgd", {}).get("images_per_sec") if same else None
        return Bench(
            model=str(data["model"]),
            dataset=str(data["dataset"]),
            device=str(data.get("device", "?")),
            batch_size=int(data["batch_size"]),
            attack_steps=int(steps[1]) if steps else 10,
            train_ips={k: float(data["images_per_sec"][k]) for k in ("vanilla", "caat")},
            pgd_ips=float(pgd) if pgd else None,
        )
    except OSError as exc:
        raise CaatError(f"--bench: cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CaatError(f"--bench: {path} is not a `caat bench --json` report") from None


def _seconds(
    cfg: RunConfig, specs: tuple[EvalSpec, ...], gpu: ReferenceGpu, bench: Bench | None
) -> tuple[float, float, str]:
    """(training seconds, evaluation seconds, basis) of one run."""
    evals = sum(eval_forward_equivalents(s, cfg) for s in specs)
    if bench is None or not bench.matches(cfg):
        flop = forward_flop(cfg.model, cfg.dataset, cfg.image_size)
        train = (train_forward_equivalents(cfg) * flop + flat_flop(cfg)) / gpu.flops
        return train, evals * flop / gpu.flops, "analytic"
    classes = _classes(cfg)
    bench_passes = 2 * training_iterations("pgd", bench.attack_steps, classes) + 6
    # Measured seconds per image of this method (its projection included), scaled from
    # the bench's PGD steps to the run's; other work at the bench's Vanilla AT speed.
    step_scale = train_passes(cfg, classes) / bench_passes
    train = train_images(cfg) * step_scale / bench.train_ips[cfg.method]
    per_fe = 1 / (bench.train_ips["vanilla"] * bench_passes)
    eval_fe = 1 / (bench.pgd_ips * attack_passes("pgd", classes)) if bench.pgd_ips else per_fe
    return train + measure_forward_equivalents(cfg) * per_fe, evals * eval_fe, "measured"


def estimate(
    plan_: Plan, gpu: ReferenceGpu | None = None, bench: Bench | None = None
) -> dict[str, Any]:
    """GPU hours of every run's training and evaluations, with the basis each used."""
    gpu = gpu or ReferenceGpu()
    runs, bases = [], set()
    for run in (*plan_.pretrain, *plan_.runs):
        train, evals, basis = _seconds(run.config, run.evaluations, gpu, bench)
        bases.add(basis)
        runs.append(
            {
                "name": run.config.name,
                "basis": basis,
                "train_gpu_hours": train / 3600,
                "eval_gpu_hours": evals / 3600,
            }
        )
    train_h = sum(r["train_gpu_hours"] for r in runs)
    eval_h = sum(r["eval_gpu_hours"] for r in runs)
    basis = bases.pop() if len(bases) == 1 else "mixed"
    return {
        "basis": basis,
        "basis_text": _basis_text(basis, gpu, bench),
        "train_gpu_hours": train_h,
        "eval_gpu_hours": eval_h,
        "total_gpu_hours": train_h + eval_h,
        "runs": runs,
        "model": MODEL_TEXT,
    }


def _basis_text(basis: str, gpu: ReferenceGpu, bench: Bench | None) -> str:
    measured = f"measured ({bench.text})" if bench is not None else ""
    analytic = f"analytic (reference GPU: {gpu.text})"
    if basis == "measured":
        return measured
    if basis == "mixed":
        return f"{measured} where it matches the run's model and data set, else {analytic}"
    why = f"; {bench.text} matches no run's model and data set" if bench is not None else ""
    return analytic + why


MODEL_TEXT = (
    "training, per image and step: 3 (clean fwd+bwd, g_c) + 2·k (k attack steps, fwd + "
    "input bwd) + 3 (adversarial fwd+bwd, g_a) forward-equivalents; TRADES +1 (its "
    "objective's clean forward), every loss but CE +2 (g_a through the clean logits too)",
    "each epoch: clean and PGD accuracy on eval_n validation and test images, "
    "2·eval_steps + 2 per image",
    f"CA-AT: + {CAAT_FLAT_FLOP}·P FLOP per step for its projection (P parameters)",
    "forward pass at 32×32: ResNet-18 0.56, ResNet-34 1.16, WRN-28-10 5.25 GMAC; at "
    "224×224: ViT-B/16 17.6, Swin-T 4.5 GMAC (scaled by image area); 1 MAC = 2 FLOP",
    "PEFT (adapters, LoRA, head): the frozen backbone gets no weight gradients, but g_c, "
    "g_a and every attack step still run a full forward and backward through it: "
    "2 + 2·k + 2 per image and step",
    "evaluation, upper bound (every image attacked by every attack): PGD-s 2s + 1, APGD "
    "2·100 + 1 per target, FAB 100·(2 + 2K), FAB-T 4·100 per target, Square 5000 "
    "forwards, AutoAttack the sum of APGD-CE, APGD-T, FAB-T and Square (≈ 10,600 on 10 "
    "classes); masking probes (PGD-100, PGD at 4× ε) included",
    "not counted: worker start-up, data loading, checkpoints",
)
