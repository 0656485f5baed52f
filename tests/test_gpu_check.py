"""The GPU check (`caat bench --gpu-check`), the paper-scale bench and its FLOP arithmetic.

On the CPU: FLOPs against closed forms, the peak table, the paper-scale report's fields,
and the whole check at --tiny writing its JSON with every part; bad input is one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from caat_app.bench.flops import achieved, count_flops, peak_tflops, step_passes
from caat_app.bench.gpu_check import PARTS, RESULT_FILE, STORE_FILE
from caat_app.bench.paper_scale import PAPER_BATCH, paper_bench, paper_config, paper_lines
from caat_app.models.build import build_model
from caat_storage import RunStatus, Store


@settings(max_examples=25, deadline=None)
@given(
    c_in=st.integers(1, 6),
    c_out=st.integers(1, 6),
    k=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 3),
    side=st.integers(5, 12),
    batch=st.integers(1, 3),
)
def test_conv_flops_are_two_in_out_k_squared_per_output_position(
    c_in: int, c_out: int, k: int, stride: int, side: int, batch: int
) -> None:
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
    out_side = (side + 2 * (k // 2) - k) // stride + 1
    expected = 2 * c_in * c_out * k * k * out_side * out_side * batch
    assert count_flops(conv, torch.rand(batch, c_in, side, side)) == expected


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(1, 64), n_out=st.integers(1, 64), batch=st.integers(1, 8))
def test_linear_flops_are_two_in_out_per_row(n_in: int, n_out: int, batch: int) -> None:
    assert count_flops(nn.Linear(n_in, n_out), torch.rand(batch, n_in)) == 2 * n_in * n_out * batch


def _model(name: str) -> nn.Module:
    return build_model(
        name, in_channels=3, num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3
    )


def test_model_forward_flops_match_their_closed_forms() -> None:
    x = torch.rand(2, 3, 32, 32)
    # The small CNN: 3×3 convolutions 3→16 at 32², 16→32 at 16², 32→64 at 8², then 64→10.
    cnn = 2 * (3 * 16 * 9 * 32**2 + 16 * 32 * 9 * 16**2 + 32 * 64 * 9 * 8**2 + 64 * 10)
    assert count_flops(_model("cnn"), x) == 2 * cnn
    # ResNet-18 at 32×32: the published 0.56 GMAC, i.e. about 1.11 GFLOP per image.
    assert count_flops(_model("resnet18"), x) / 2 == pytest.approx(1.11e9, rel=0.01)


def test_counting_leaves_the_model_in_its_mode_and_its_statistics_alone() -> None:
    model = _model("cnn").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, torch.rand(4, 3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_peak_table_by_device_name_and_precision() -> None:
    assert peak_tflops("NVIDIA H200", "bf16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == pytest.approx(756.0)
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "tf32") == pytest.approx(156.0)
    assert peak_tflops("NVIDIA GeForce RTX 4090", "bf16") is None
    assert peak_tflops("cpu", "fp32") is None


def test_achieved_tflops_and_share_of_peak() -> None:
    out = achieved(26, 1.11e9, 10_000.0, 989.4)
    assert out["tflops"] == pytest.approx(26 * 1.11e9 * 10_000 / 1e12)
    assert out["peak_share"] == pytest.approx(out["tflops"] / 989.4)
    assert achieved(3, 1e9, 1.0, None)["peak_share"] is None


def test_forward_equivalents_of_each_kind_of_step() -> None:
    cfg = paper_config("resnet18", "caat", dataset="synthetic-cifar-tiny")
    assert cfg.batch_size == PAPER_BATCH == 1024 and cfg.attack_steps == 10
    assert step_passes("clean", cfg, 10) == 3
    # PGD-10: 10 forwards and input gradients, then g_c and g_a with weight gradients.
    assert step_passes("vanilla", cfg, 10) == step_passes("caat", cfg, 10) == 2 * 10 + 3 + 3
    short = paper_config("resnet18", "vanilla", attack_steps=2)
    assert step_passes("vanilla", short, 10) == 2 * 2 + 6


def test_paper_scale_report_on_the_cpu() -> None:
    report = paper_bench(
        models=("linear",),
        batch_size=8,
        attack_steps=1,
        steps=2,
        repeats=1,
        device="cpu",
        eval_n=0,
        dataset="synthetic-cifar-tiny",
    )
    assert (report["device"], report["batch_size"], report["bn"]) == ("cpu", 8, "batchstats")
    assert report["evaluation"] is None and report["attack"] == "pgd-1 linf eps=8/255"
    (model,) = report["models"]
    assert model["forward_flops"] == 2 * 3 * 32 * 32 * 10  # logistic regression on 3×32×32
    assert model["precision"] == "fp32" and model["peak_tflops"] is None
    for kind, passes in (("clean", 3), ("vanilla", 8), ("caat", 8)):
        step = model["steps"][kind]
        assert step["images_per_sec"] == pytest.approx(8000 / step["ms_per_step"])
        assert step["forward_equivalents"] == passes and step["peak_share"] is None
        assert step["tflops"] == pytest.approx(passes * 61_440 * step["images_per_sec"] / 1e12)
    lines = paper_lines(report)
    assert "synthetic" in lines[0] and "batch 8" in lines[0]
    assert "peak not known" in lines[1] and "% of peak" not in "".join(lines)
    assert [line.split(":")[0].strip() for line in lines[2:5]] == [
        "clean training", "Vanilla AT", "CA-AT",
    ]  # fmt: skip


@pytest.mark.slow
def test_tiny_gpu_check_on_the_cpu_writes_every_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "check"
    assert run_cli("bench", "--gpu-check", str(out), "--device", "cpu", "--tiny") == 0
    captured = capsys.readouterr()
    progress = captured.err.strip().splitlines()
    assert [line.split()[1] for line in progress] == list(PARTS)
    assert all(line.startswith("gpu-check: ") for line in progress)
    assert "passed" in captured.out and RESULT_FILE in captured.out
    summary = json.loads((out / RESULT_FILE).read_text())
    assert summary["passed"] is True and summary["device"] == "cpu"
    assert summary["torch"] == torch.__version__ and summary["tiny"] is True
    parts = summary["parts"]
    assert list(parts) == list(PARTS)
    assert {name: p["status"] for name, p in parts.items()} == {
        **dict.fromkeys(PARTS, "passed"), "sync-debug": "skipped",
    }  # fmt: skip
    assert parts["sync-debug"]["reason"].startswith("skipped: cpu")
    assert all(p["seconds"] >= 0 for p in parts.values())
    for bench in ("bench-r18", "bench-wrn28-10"):
        assert set(parts[bench]["steps"]) == {"clean", "vanilla", "caat"}
    train = parts["train"]
    assert [e["epoch"] for e in train["epochs"]] == [1, 2]
    assert train["config"]["preset"] == "paper-cifar10-r18"
    assert train["config"]["dataset"] == "synthetic-cifar-tiny"
    evaluation = parts["evaluate"]
    assert evaluation["images"] == 20 and 0 <= evaluation["robust"] <= evaluation["clean"]
    # The run and its evaluation went into a fresh store in the folder, as a worker records them.
    with Store.open(f"sqlite:///{out / STORE_FILE}") as store:
        (run,) = store.list_runs()
        assert (run.id, run.status, run.epochs_done) == (train["run"], "finished", 2)
        attacks = {r.attack for r in store.evals(train["run"])}
    assert attacks == {"clean", "autoattack"}


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (("--tiny",), "--tiny: only with --gpu-check"),
        (("--gpu-check", "{file}"), "is a file"),
        (("--gpu-check", "{done}"), "already holds a check"),
    ],
)
def test_bad_gpu_check_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], mentions: str
) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / RESULT_FILE).write_text("{}")
    paths = {"{file}": str(tmp_path / "a-file"), "{done}": str(tmp_path / "done")}
    argv = [paths.get(a, a) for a in args]
    assert run_cli("bench", *argv, "--device", "cpu") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and mentions in lines[0]
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_check_on_a_missing_gpu_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("bench", "--gpu-check", str(tmp_path / "c"), "--device", "cuda") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "CUDA" in lines[0]
    assert not (tmp_path / "c").exists()  # nothing made before the input is checked


def test_unknown_paper_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("bench", "--only", "paper-scale", "--paper-models", "bogus") == 2
    assert "--paper-models: unknown 'bogus'" in capsys.readouterr().err


def test_failing_parts_are_recorded_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import caat_app.bench.gpu_check as check
    import caat_app.runs.worker as worker

    def out_of_memory(**_: object) -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(check, "paper_bench", out_of_memory)
    monkeypatch.setattr(worker, "execute_run", lambda *_: RunStatus.FAILED)
    out = tmp_path / "check"
    assert run_cli("bench", "--gpu-check", str(out), "--device", "cpu", "--tiny") == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and len(captured.err.strip().splitlines()) == len(PARTS)
    parts = json.loads((out / RESULT_FILE).read_text())["parts"]
    assert {name: p["status"] for name, p in parts.items()} == {
        **dict.fromkeys(PARTS, "failed"), "sync-debug": "skipped",
    }  # fmt: skip
    assert parts["bench-r18"]["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert "Traceback" in parts["bench-r18"]["traceback"]
    assert parts["train"]["error"].startswith("CheckFailed: run 1 ended failed after 0 of 2")
    assert "no best checkpoint" in parts["evaluate"]["error"]
