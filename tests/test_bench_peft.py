"""`caat bench --model M --peft P`: the report's fields, not its timings."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

from caat_app.bench.peft import bench_size, peft_lines

TINY = ("--steps", "1", "--repeats", "1", "--batch-size", "2", "--attack-steps", "1")


def _adapter_and_head(width: int, depth: int, reduction: int, classes: int) -> int:
    """Trainable parameters of Pfeiffer adapters (down, up, with biases) and a new head."""
    bottleneck = width // reduction
    per_block = (width * bottleneck + bottleneck) + (bottleneck * width + width)
    return depth * per_block + width * classes + classes


def test_peft_bench_reports_speed_and_memory_of_both_methods(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli("bench", "--model", "vit-micro", "--peft", "adapter", "--json", *TINY) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"peft"}  # --peft times its steps, not the digits bench and the rest
    peft = report["peft"]
    assert (peft["model"], peft["peft"], peft["image_size"], peft["batch_size"]) == (
        "vit-micro", "adapter", 32, 2,
    )  # fmt: skip
    assert peft["device"] == "cpu" and peft["memory"] == "peak RSS delta (CPU)"
    assert "synthetic" in peft["inputs"]
    # vit-micro: width 64, depth 4; adapters at reduction 16; a head for 200 classes
    assert peft["trainable"] == _adapter_and_head(64, 4, 16, 200)
    assert peft["trainable"] < peft["parameters"]
    for kind in ("vanilla", "caat"):
        step = peft["steps"][kind]
        assert step["images_per_sec"] == pytest.approx(2000 / step["ms_per_step"])
        assert step["peak_mib"] is not None and step["peak_mib"] >= 0
    lines = peft_lines(peft)
    assert "vit-micro+adapter at 32×32" in lines[0] and "synthetic" in lines[0]
    assert lines[1].startswith("  Vanilla AT: ") and lines[2].startswith("  CA-AT: ")
    assert all("peak RSS delta (CPU)" in line for line in lines[1:])


def test_peft_bench_prints_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("bench", "--model", "swin-micro", "--peft", "head", *TINY) == 0
    out = capsys.readouterr().out
    assert "swin-micro+head at 32×32" in out
    assert "Vanilla AT:" in out and "CA-AT:" in out and "images / s" in out


def test_imagenet_transformers_are_timed_at_224() -> None:
    assert [bench_size(m) for m in ("vit-b16", "swin-t", "vit-micro")] == [224, 224, 32]


@pytest.mark.parametrize(
    ("args", "field"),
    [(("--model", "cnn", "--peft", "adapter"), "peft"), (("--peft", "bogus"), "peft")],
)
def test_a_bad_peft_bench_is_one_line(
    args: tuple[str, ...], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("bench", *args, *TINY) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {field}: ") and "\n" not in err
