"""Parameter-efficient adversarial fine-tuning: adapters and LoRA start as the identity,
only they and the new head train (and only they are in the flat buffers and the CA-AT
projection), PEFT checkpoints keep the trainable part plus the base file's hash, and the
attacks build no parameter gradients."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from caat_app.attacks.registry import TRAINING_ATTACKS, run_attack
from caat_app.config import RunConfig, build_config
from caat_app.data.splits import load_dataset
from caat_app.errors import CaatError, ConfigError
from caat_app.evaluation.runner import load_run_model
from caat_app.method.losses import clean_loss
from caat_app.method.optim import FlatParams
from caat_app.models.adapters import classifier, trainable_names
from caat_app.models.build import build_for_run, build_model
from caat_app.models.saved import load_model_state
from caat_app.models.weights import file_sha256
from caat_app.training.checkpoint import load_resume
from caat_app.training.sinks import ListSink
from caat_app.training.steps import STEP_FIELDS
from caat_app.training.trainer import Trainer

GREY8 = {"in_channels": 1, "num_classes": 10, "image_size": 8, "mean": (0.3,), "std": (0.4,)}
RGB32 = {
    "in_channels": 3,
    "num_classes": 5,
    "image_size": 32,
    "mean": (0.4,) * 3,
    "std": (0.2,) * 3,
}
SHAPES = {"vit-micro": GREY8, "swin-micro": RGB32}
RUN = {
    "model": "vit-micro",
    "epochs": 1,
    "attack_steps": 2,
    "eval_steps": 2,
    "eval_n": 32,
    "log_every": 1,
    "device": "cpu",
    "lr": 0.05,
}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base weights file per micro model (random weights stand in for pretrained ones)."""
    folder = tmp_path_factory.mktemp("bases")
    files = {}
    for i, (name, shape) in enumerate(SHAPES.items()):
        torch.manual_seed(10 + i)
        body = build_model(name, **shape)[1]
        files[name] = folder / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(files[name]))
    return files


def _config(base: Path, **options: Any) -> RunConfig:
    return build_config({**RUN, "weights": str(base), **options})


def _outputs(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["adapter", "lora"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_adapted_models_start_as_their_base(bases: dict[str, Path], name: str, mode: str) -> None:
    shape = SHAPES[name]
    base = build_model(name, weights=str(bases[name]), **shape)
    adapted = build_model(name, weights=str(bases[name]), peft=mode, **shape)
    classifier(adapted[1]).load_state_dict(classifier(base[1]).state_dict())  # same new head
    x = torch.rand(6, shape["in_channels"], shape["image_size"], shape["image_size"])
    torch.testing.assert_close(_outputs(adapted, x), _outputs(base, x), rtol=0, atol=0)


# Trainable counts by hand. vit-micro: 4 blocks of width 64, head 64·10 + 10 = 650.
# Adapter (64 → 64/16 = 4 → 64): 64·4 + 4 + 4·64 + 64 = 580 a block.
# LoRA rank 8 on qkv (64 → 192): 8·64 + 192·8 = 2048, on proj (64 → 64): 1024.
# swin-micro: 2 blocks of width 32 (adapter 32 → 2 → 32: 162), 2 of 64 (580), head 64·5 + 5.
@pytest.mark.parametrize(
    ("name", "mode", "count"),
    [
        ("vit-micro", "head", 650),
        ("vit-micro", "adapter", 4 * 580 + 650),
        ("vit-micro", "lora", 4 * (2048 + 1024) + 650),
        ("swin-micro", "adapter", 2 * 162 + 2 * 580 + 325),
        ("vit-micro", "full", 204_234),
    ],
)
def test_what_each_mode_trains(name: str, mode: str, count: int) -> None:
    model = build_model(name, peft=mode, **SHAPES[name])
    names = trainable_names(model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count
    kinds = {"head": ("head.",), "adapter": (".adapter.", "head."), "lora": (".lora_", "head.")}
    if mode in kinds:
        assert all(any(k in n for k in kinds[mode]) for n in names)


def test_peft_is_refused_on_a_cnn() -> None:
    with pytest.raises(
        ConfigError, match=r"^peft: only for the transformer models.*cnn is not one$"
    ):
        build_model("cnn", peft="adapter", **GREY8)
    with pytest.raises(ConfigError, match=r"^weights: only for the transformer models"):
        build_model("resnet18", weights="/nowhere.pt", **RGB32)


def _cos(a: Tensor, b: Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("mode", ["adapter", "lora", "head"])
def test_a_training_step_moves_only_what_trains(
    digits: Any, bases: dict[str, Path], mode: str
) -> None:
    """The flat buffers hold exactly the trainable tensors; the step is CA-AT's closed form
    on their gradients (no weight decay, first step: no momentum yet); the rest stays put."""
    gamma, lr = 0.8, 0.05
    cfg = _config(bases["vit-micro"], peft=mode, method="caat", gamma=gamma, weight_decay=0.0)
    trainer = Trainer(cfg, ListSink(), data=digits)
    model, flat = trainer.model, trainer.flat
    trainable = [p for p in model.parameters() if p.requires_grad]
    count = sum(p.numel() for p in trainable)
    assert flat.numel == count == trainer.direction.numel() and flat.grads.shape == (2, count)
    assert trainer.layer_names == trainable_names(model) and len(flat.sizes) == len(trainable)
    xb, yb = next(trainer.batches())
    g_c = torch.cat(
        [g.flatten() for g in torch.autograd.grad(clean_loss(model(xb), yb), trainable)]
    )
    before = _snapshot(model)
    metrics = trainer.train_step(xb, yb, lr)
    assert flat.grads_in_buffer()
    torch.testing.assert_close(flat.grads[0], g_c)
    g_c, g_a = flat.grads[0], flat.grads[1]
    phi = _cos(g_c, g_a)
    assert float(metrics[STEP_FIELDS.index("phi")]) == pytest.approx(phi, abs=1e-5)
    if phi > gamma:
        step = g_c
    else:
        scale = g_a.norm() * (gamma * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - gamma**2))
        step = g_a + scale / (g_c.norm() * math.sqrt(1 - gamma**2)) * g_c
    after = _snapshot(model)
    moved = torch.cat([(after[n] - before[n]).flatten() for n in trainer.layer_names])
    torch.testing.assert_close(moved, -lr * step, rtol=1e-4, atol=1e-7)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None and torch.equal(after[name], before[name]), name
    changed = {n for n in trainer.layer_names if not torch.equal(after[n], before[n])}
    assert "1.head.weight" in changed
    first = {"adapter": "1.blocks.0.mlp.adapter.up.weight", "lora": "lora_B", "head": "head"}
    assert any(first[mode] in n for n in changed)


def test_the_layer_projection_has_a_segment_per_trainable_tensor(
    digits: Any, bases: dict[str, Path]
) -> None:
    cfg = _config(bases["vit-micro"], peft="adapter", projection="layer")
    trainer = Trainer(cfg, ListSink(), data=digits)
    assert trainer.mixer.n_segments == len(trainable_names(trainer.model)) == 4 * 4 + 2


@pytest.mark.parametrize("mode", ["adapter", "lora"])
def test_adapters_and_lora_train(bases: dict[str, Path], digits: Any, mode: str) -> None:
    torch.manual_seed(0)
    model = build_model("vit-micro", weights=str(bases["vit-micro"]), peft=mode, **GREY8)
    x, y = digits.x_train[:128], digits.y_train[:128]
    added = {n: p for n, p in model.named_parameters() if p.requires_grad and "head" not in n}
    start = {n: p.detach().clone() for n, p in added.items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert all(not torch.equal(p, start[n]) for n, p in added.items())


@pytest.fixture(scope="module")
def finetuned(
    digits: Any, bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunConfig, Trainer, Path]:
    """A vit-micro adapter run of one epoch on its own copy of the base file."""
    folder = tmp_path_factory.mktemp("run")
    base = folder / "base.safetensors"
    shutil.copy(bases["vit-micro"], base)
    cfg = _config(base, peft="adapter")
    trainer = Trainer(cfg, ListSink(), data=digits, run_dir=folder / "run")
    assert trainer.run().status == "finished"
    return cfg, trainer, folder / "run"


def test_a_peft_checkpoint_keeps_the_trainable_part_and_the_base(
    finetuned: tuple[RunConfig, Trainer, Path], digits: Any
) -> None:
    cfg, trainer, run_dir = finetuned
    x = digits.x_test[:64]
    for name in ("best.pt", "last.pt"):
        state = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        assert list(state["model"]) == trainable_names(trainer.model)
        assert state["base"] == {
            "file": cfg.weights,
            "sha256": file_sha256(cfg.weights),
            "peft": "adapter",
            "partial": True,
        }
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    fresh = build_for_run(cfg, digits, CPU)
    load_model_state(fresh, state["model"], state["base"], "last.pt")
    torch.testing.assert_close(_outputs(fresh, x), _outputs(trainer.model, x), rtol=0, atol=0)
    run = SimpleNamespace(id=7, run_dir=str(run_dir), config=cfg.model_dump_json())
    model, _, _, weights = load_run_model(run, "last", "cpu")  # type: ignore[arg-type]
    torch.testing.assert_close(_outputs(model, x), _outputs(trainer.model, x), rtol=0, atol=0)
    assert weights == f"epoch 1, step {trainer.step}"


def test_the_resume_checkpoint_keeps_the_trainable_part(
    finetuned: tuple[RunConfig, Trainer, Path],
) -> None:
    _, trainer, run_dir = finetuned
    state = load_resume(run_dir, trainer.step)
    assert list(state["model"]) == trainable_names(trainer.model)
    assert state["base"]["partial"] is True


class StopAfterEpoch(ListSink):
    """Asks the run to stop once its first epoch row is in (a cancelled run)."""

    def should_stop(self) -> bool:
        return bool(self.epoch_rows)


def test_a_resumed_peft_run_ends_as_an_uninterrupted_one(
    finetuned: tuple[RunConfig, Trainer, Path], digits: Any, tmp_path: Path
) -> None:
    cfg, _, _ = finetuned
    cfg = cfg.model_copy(update={"epochs": 2})
    whole = Trainer(cfg, ListSink(), data=digits)
    whole.run()
    stopped = Trainer(cfg, StopAfterEpoch(), data=digits, run_dir=tmp_path)
    assert stopped.run().status == "cancelled"
    sink = ListSink()
    resumed = Trainer(cfg, sink, data=digits, run_dir=tmp_path, resume_step=stopped.step)
    assert resumed.run().status == "finished" and [r["epoch"] for r in sink.epoch_rows] == [2]
    x = digits.x_test[:64]
    torch.testing.assert_close(_outputs(resumed.model, x), _outputs(whole.model, x), rtol=0, atol=0)


def test_a_changed_or_moved_base_fails_in_one_line(
    finetuned: tuple[RunConfig, Trainer, Path], digits: Any
) -> None:
    cfg, _, run_dir = finetuned
    base = Path(str(cfg.weights))
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    kept = base.with_suffix(".kept")
    shutil.copy(base, kept)
    try:
        tensors = load_file(str(base))
        tensors["blocks.0.norm1.weight"] = tensors["blocks.0.norm1.weight"] + 1e-3
        save_file(tensors, str(base))
        fresh = build_for_run(cfg, digits, CPU)
        with pytest.raises(CaatError) as err:
            load_model_state(fresh, state["model"], state["base"], "last.pt")
        message = str(err.value)
        assert message.startswith(f"last.pt: its base weights {base} changed since it was saved")
        assert state["base"]["sha256"][:12] in message and "\n" not in message
        run = SimpleNamespace(id=7, run_dir=str(run_dir), config=cfg.model_dump_json())
        with pytest.raises(CaatError, match=r"^run 7: its last checkpoint .* changed since"):
            load_run_model(run, "last", "cpu")  # type: ignore[arg-type]
        base.unlink()
        with pytest.raises(CaatError, match=f"^run 7: weights {base}: no such file"):
            load_run_model(run, "last", "cpu")  # type: ignore[arg-type]
    finally:
        shutil.copy(kept, base)


def test_a_partial_checkpoint_of_other_keys_fails_in_one_line(
    finetuned: tuple[RunConfig, Trainer, Path], digits: Any
) -> None:
    cfg, _, run_dir = finetuned
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    del state["model"]["1.blocks.2.mlp.adapter.up.bias"]
    state["model"]["1.blocks.2.mlp.adapter.side.bias"] = torch.zeros(3)
    fresh = build_for_run(cfg, digits, CPU)
    with pytest.raises(CaatError) as err:
        load_model_state(fresh, state["model"], state["base"], "last.pt")
    assert str(err.value) == (
        "last.pt does not fit its model's trainable part: 1 missing "
        "(1.blocks.2.mlp.adapter.up.bias), 1 unexpected (1.blocks.2.mlp.adapter.side.bias)"
    )


def test_attacks_build_no_parameter_gradients(bases: dict[str, Path], digits: Any) -> None:
    model = build_model("vit-micro", weights=str(bases["vit-micro"]), peft="adapter", **GREY8)
    x, y = digits.x_test[:16], digits.y_test[:16]
    for attack in TRAINING_ATTACKS:
        run_attack(attack, model, x, y, eps=0.3, alpha=0.1, steps=2, norm="linf")
        assert all(p.grad is None for p in model.parameters()), attack
    flat = FlatParams(model)  # as training holds it: every .grad a view of the buffer
    flat.zero_grads()
    flat.grad_into(0)
    for attack in TRAINING_ATTACKS:
        run_attack(attack, model, x, y, eps=0.3, alpha=0.1, steps=2, norm="l2")
    assert not flat.grads.any()


def test_grad_checkpointing_gives_the_same_gradients(bases: dict[str, Path]) -> None:
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    grads = []
    for on in (False, True):
        torch.manual_seed(3)
        model = build_model(
            "vit-micro",
            weights=str(bases["vit-micro"]),
            peft="adapter",
            grad_checkpointing=on,
            **GREY8,
        )
        assert model[1].grad_checkpointing is on
        trainable = [p for p in model.parameters() if p.requires_grad]
        grads.append(torch.autograd.grad(F.cross_entropy(model(x), y), trainable))
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(checkpointed, plain)
