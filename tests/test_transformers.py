"""Transformers through timm: the registry's entries, image sizes, the normalisation their
weights expect, and base weights read from a local file with their keys mapped."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import save_file
from torch import nn

from caat_app.config import build_config
from caat_app.errors import ConfigError
from caat_app.models import MODELS
from caat_app.models.adapters import classifier
from caat_app.models.build import build_model
from caat_app.models.registry import INPUT_NORMS, TRANSFORMERS
from caat_app.models.weights import file_sha256

GREY8 = {"in_channels": 1, "num_classes": 10, "image_size": 8, "mean": (0.3,), "std": (0.4,)}
RGB32 = {
    "in_channels": 3,
    "num_classes": 5,
    "image_size": 32,
    "mean": (0.4,) * 3,
    "std": (0.2,) * 3,
}


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the body computes before its head (timm's `forward_features`)."""
    model.eval()
    with torch.no_grad():
        return model[1].forward_features(model[0](x))


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return build_model("vit-micro", **GREY8)


@pytest.mark.parametrize(
    ("name", "published"),
    [("vit-b16", 86.6e6), ("vit-s16", 22.1e6), ("vit-ti16", 5.7e6), ("swin-t", 28.3e6)],
)
def test_pretrainable_models_have_the_published_sizes(name: str, published: float) -> None:
    model = build_model(name, **{**RGB32, "num_classes": 1000, "image_size": 224})
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - published) / published < 0.01
    assert isinstance(classifier(model[1]), nn.Linear)


def test_the_registry_marks_transformers_and_their_normalisation() -> None:
    assert set(TRANSFORMERS) >= {"vit-b16", "vit-s16", "vit-ti16", "vit-micro", "swin-t"}
    for name in TRANSFORMERS:
        entry = MODELS[name]
        assert entry.normalization in INPUT_NORMS
        pretrained = not name.endswith("-micro")
        assert (entry.normalization == "imagenet") == pretrained
    assert not MODELS["cnn"].transformer and MODELS["cnn"].normalization == "data"


@pytest.mark.parametrize(("size", "tokens"), [(8, 4), (28, 49), (32, 64)])
def test_vit_micro_takes_sides_divisible_by_its_patch(size: int, tokens: int) -> None:
    model = build_model("vit-micro", **{**GREY8, "image_size": size})
    x = torch.rand(2, 1, size, size)
    assert model(x).shape == (2, 10)
    assert model[1].patch_embed.num_patches == tokens


def test_other_sizes_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"4×4 patches; a side of 30 is not divisible") as err:
        build_model("vit-micro", **{**GREY8, "image_size": 30})
    assert "\n" not in str(err.value)
    for name in ("swin-t", "swin-s", "swin-b"):
        with pytest.raises(ConfigError, match="multiple of 224"):
            build_model(name, **RGB32)
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_model("swin-micro", **GREY8)
    with pytest.raises(ConfigError, match="grey or RGB"):
        build_model("vit-micro", **{**RGB32, "in_channels": 4, "mean": (0.5,) * 4})


def test_swin_micro_on_32_pixels() -> None:
    model = build_model("swin-micro", **RGB32).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 3, 32, 32)).shape == (3, 5)


def test_the_model_normalises_with_its_weights_statistics_not_the_datas() -> None:
    model = build_model("vit-ti16", **RGB32)
    mean, std = INPUT_NORMS["imagenet"]
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model[0](x), expected)


def test_a_grey_image_is_seen_as_rgb(vit: nn.Module) -> None:
    vit.eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), vit(x.repeat(1, 3, 1, 1)), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_load_with_wrappers_stripped_and_a_new_head(
    vit: nn.Module, tmp_path: Path, suffix: str
) -> None:
    """A DataParallel-style prefix, a normaliser and another head: all mapped away."""
    state = {f"module.{k}": v for k, v in vit[1].state_dict().items()}
    state["module.head.weight"] = torch.zeros(1000, 64)  # an ImageNet head
    state["module.head.bias"] = torch.zeros(1000)
    state["normalize.mean"], state["normalize.std"] = torch.zeros(3), torch.ones(3)
    path = _save(state, tmp_path / f"vit{suffix}")
    model = build_model("vit-micro", weights=str(path), **GREY8)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(_features(model, x), _features(vit, x), rtol=0, atol=0)
    assert model(x).shape == (5, 10)  # the new head, for these classes
    base = model.base
    assert base is not None and base.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert base.tensors == len(vit[1].state_dict()) - 2
    text = base.describe()
    for said in ("prefixes stripped from", "input normalisation dropped", "old head dropped"):
        assert said in text and "\n" not in text


def test_a_caat_checkpoint_is_a_weights_file(vit: nn.Module, tmp_path: Path) -> None:
    """`best.pt` of a full caat run: the `model` entry, `0.` normaliser, `1.` body."""
    path = tmp_path / "best.pt"
    torch.save({"model": vit.state_dict(), "epoch": 3, "step": 27}, path)
    model = build_model("vit-micro", weights=str(path), **GREY8)
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(_features(model, x), _features(vit, x), rtol=0, atol=0)


def test_a_position_embedding_is_resampled_to_the_image_size(tmp_path: Path) -> None:
    torch.manual_seed(1)
    big = build_model("vit-micro", **{**GREY8, "image_size": 32})
    path = _save(big[1].state_dict(), tmp_path / "vit32.safetensors")
    small = build_model("vit-micro", weights=str(path), **{**GREY8, "image_size": 16})
    assert small[1].pos_embed.shape == (1, 1 + 16, 64)
    assert "timm's vit conversion changed 1 keys" in small.base.describe()


def test_an_old_swin_layout_maps_onto_timms(tmp_path: Path) -> None:
    """The original Swin code merges patches at the end of a stage and names the head
    `head`; timm merges at the start of the next one and names it `head.fc`."""
    torch.manual_seed(2)
    swin = build_model("swin-micro", **RGB32)
    old = {
        k.replace("layers.1.downsample", "layers.0.downsample").replace("head.fc.", "head."): v
        for k, v in swin[1].state_dict().items()
    }
    path = _save(old, tmp_path / "swin.pt")
    model = build_model("swin-micro", weights=str(path), **RGB32)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(_features(model, x), _features(swin, x), rtol=0, atol=0)


def test_keys_that_do_not_fit_fail_in_one_line(vit: nn.Module, tmp_path: Path) -> None:
    state = dict(vit[1].state_dict())
    del state["blocks.0.attn.qkv.weight"], state["blocks.3.mlp.fc2.bias"]
    state["blocks.9.extra.weight"] = torch.zeros(2)
    path = _save(state, tmp_path / "vit.safetensors")
    with pytest.raises(ConfigError) as err:
        build_model("vit-micro", weights=str(path), **GREY8)
    message = str(err.value)
    assert message.startswith(f"weights {path} do not fit vit-micro: 2 missing keys (")
    assert "blocks.0.attn.qkv.weight" in message and "blocks.3.mlp.fc2.bias" in message
    assert "1 unexpected (blocks.9.extra.weight)" in message and "\n" not in message


def test_weights_of_another_width_name_the_shapes(tmp_path: Path) -> None:
    swin = build_model("swin-micro", **RGB32)
    state = {k: v for k, v in swin[1].state_dict().items() if k != "layers.0.blocks.0.norm1.bias"}
    state["patch_embed.norm.weight"] = torch.ones(48)
    path = _save(state, tmp_path / "swin.pt")
    with pytest.raises(ConfigError, match=r"1 missing keys \(layers\.0\.blocks\.0\.norm1\.bias\)"):
        build_model("swin-micro", weights=str(path), **RGB32)
    with pytest.raises(
        ConfigError, match=re.escape("patch_embed.norm.weight: 48 in the file, 32 here")
    ):
        build_model("swin-micro", weights=str(path), **RGB32)


def test_unreadable_weights_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        build_model("vit-micro", weights=str(tmp_path / "gone.pt"), **GREY8)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not weights at all" * 10)
    with pytest.raises(ConfigError, match="neither a safetensors file nor a weights-only"):
        build_model("vit-micro", weights=str(junk), **GREY8)
    pickled = tmp_path / "object.pt"
    torch.save({"model": nn.Linear(2, 2)}, pickled)  # a module, not weights
    with pytest.raises(ConfigError, match="weights-only"):
        build_model("vit-micro", weights=str(pickled), **GREY8)


def test_the_hash_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 3_000_000)
    assert file_sha256(path) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    path.write_bytes(b"b" * 10)
    assert file_sha256(path) == hashlib.sha256(b"b" * 10).hexdigest()


def test_config_takes_transformer_fields_for_transformers_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    monkeypatch.chdir(tmp_path)
    cfg = build_config({"model": "vit-micro", "weights": path.name, "peft": "adapter"})
    assert cfg.weights == str(path.resolve())  # the worker runs in another folder
    assert cfg.adapter_reduction == 16 and cfg.lora_rank == 8 and cfg.grad_checkpointing is False
    with pytest.raises(ConfigError, match="weights: no such file"):
        build_config({"model": "vit-micro", "weights": "gone.safetensors"})
    for field, value in (("peft", "adapter"), ("weights", str(path)), ("grad_checkpointing", True)):
        with pytest.raises(ConfigError, match=f"^{field}: only for the transformer models"):
            build_config({"model": "cnn", field: value})
    with pytest.raises(ConfigError, match="bn: vit-micro has no BatchNorm"):
        build_config({"model": "vit-micro", "bn": "batchstats"})
    with pytest.raises(ConfigError, match="peft"):
        build_config({"model": "vit-micro", "peft": "prefix"})


def test_the_cli_refuses_peft_on_a_cnn_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "caat.db")
    code = run_cli("train", "--model", "cnn", "--peft", "adapter", "--db", db, "--epochs", "1")
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: peft: only for the transformer models")
    assert lines[0].endswith("cnn is not one")
