"""Per-layer conflict (`--layer-stats N`): the arithmetic, the recording, the store, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from caat_app.analysis.layers import binned, layer_map, layer_summary, short_names
from caat_app.config import build_config
from caat_app.data.splits import load_dataset
from caat_app.method.conflict import conflict_stats, segment_conflict, segment_ids
from caat_app.runs.manage import create_run
from caat_app.runs.worker import StopFlag, execute_run
from caat_app.training.sinks import ListSink
from caat_app.training.steps import LAYER_FIELDS
from caat_app.training.trainer import Trainer, train
from caat_storage import Store

FAST = {"model": "linear", "attack_steps": 2, "eval_steps": 2, "eval_n": 50, "epochs": 1}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _gradients(draw: st.DrawFn) -> tuple[list[int], torch.Tensor]:
    sizes = draw(st.lists(st.integers(1, 7), min_size=1, max_size=6))
    seed = draw(st.integers(0, 2**16))
    grads = torch.randn(2, sum(sizes), generator=torch.Generator().manual_seed(seed))
    grads = grads.double()
    zero = draw(st.sampled_from([None, 0, 1]))  # a segment whose g_c or g_a vanishes
    if zero is not None:
        grads[zero, : sizes[0]] = 0.0
    return sizes, grads


gradients = st.composite(_gradients)


@settings(max_examples=60, deadline=None)
@given(gradients())
def test_segment_conflict_is_conflict_stats_of_each_slice(case) -> None:
    sizes, grads = case
    got = segment_conflict(grads, sizes)
    by_ids = conflict_stats(grads[0], grads[1], segments=segment_ids(sizes))
    start = 0
    for i, n in enumerate(sizes):
        oracle = conflict_stats(grads[0, start : start + n], grads[1, start : start + n])
        for field in LAYER_FIELDS:
            expected = getattr(oracle, field).item()
            assert getattr(got, field)[i].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
            assert getattr(by_ids, field)[i].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
        start += n


@settings(max_examples=60, deadline=None)
@given(gradients())
def test_layer_mu_adds_up_to_at_most_the_whole_mu(case) -> None:
    """Σ_l g_c,l·g_a,l = g_c·g_a exactly, and Σ_l μ_l ≤ μ (Cauchy-Schwarz)."""
    sizes, grads = case
    per = segment_conflict(grads, sizes)
    whole = conflict_stats(grads[0], grads[1])
    dots = per.norm_c * per.norm_a * per.phi
    assert dots.sum().item() == pytest.approx(torch.dot(grads[0], grads[1]).item(), abs=1e-9)
    assert per.mu.sum().item() <= whole.mu.item() + 1e-9


def test_recorded_layers_equal_the_oracle_on_each_slice(digits) -> None:
    """Every other step's layers, equal to φ, μ and norms of each parameter's slice of the
    two gradients the step used, copied out only with the step rows, never on their own."""
    sink = ListSink()
    config = build_config({**FAST, "model": "cnn", "layer_stats": 2, "log_every": 3})
    trainer = Trainer(config, sink, data=digits)
    named = [(n, p.numel()) for n, p in trainer.model.named_parameters() if p.requires_grad]
    recorder = trainer.recorder()
    kept: dict[int, torch.Tensor] = {}
    for step, (xb, yb) in zip(range(5), trainer.batches(), strict=False):
        metrics = trainer.train_step(xb, yb, 0.05)
        kept[step] = trainer.flat.grads.clone()
        trainer.finish_step(recorder, metrics, 1, 0.05)
        copied = {r["step"] for r in sink.step_rows}  # every 3 steps, or sooner if slow
        assert {r["step"] for r in sink.layer_rows} == {s for s in copied if s % 2 == 0}
    recorder.copy_out()
    assert sink.layer_names == tuple(n for n, _ in named)
    assert sink.layer_sizes == tuple(n for _, n in named)
    assert [(r["step"], r["layer"]) for r in sink.layer_rows] == [
        (s, i) for s in (0, 2, 4) for i in range(len(named))
    ]
    for row in sink.layer_rows:
        grads = kept[row["step"]]
        start = sum(n for _, n in named[: row["layer"]])
        end = start + named[row["layer"]][1]
        oracle = conflict_stats(grads[0, start:end], grads[1, start:end])
        for field in LAYER_FIELDS:
            assert row[field] == pytest.approx(getattr(oracle, field).item(), rel=1e-4, abs=1e-7)
        assert row["epoch"] == 1


def test_nothing_is_recorded_by_default_and_every_n_steps_when_asked(digits) -> None:
    off = ListSink()
    result = train(build_config(FAST), off, data=digits)
    assert result.steps_done > 8 and off.step_rows
    assert off.layer_rows == [] and off.layer_names == ()
    on = ListSink()
    result = train(build_config({**FAST, "layer_stats": 4}), on, data=digits)
    assert sorted({r["step"] for r in on.layer_rows}) == list(range(0, result.steps_done, 4))
    assert on.layer_names == ("1.1.weight", "1.1.bias")  # behind the model's normaliser


def test_rows_land_in_the_store_through_the_worker_sink(tmp_path: Path) -> None:
    """A real digits run: the layers are named once, and at each recorded step the layers'
    squared norms and dot products add up to the whole model's, stored by the steps."""
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as store:
        run_id = create_run(store, build_config({**FAST, "model": "cnn", "layer_stats": 3}))
        assert execute_run(store, run_id, StopFlag()) == "finished"
        layers = store.run_layers(run_id)
        rows = store.layer_metrics(run_id)
        steps = {s.step: s for s in store.steps(run_id)}
        assert store.layer_metrics(run_id, after_step=max(steps)) == []
    assert [(x.layer, x.size) for x in layers][-2:] == [(9, 640), (10, 10)]
    assert layers[-1].name == "1.fc.bias"
    assert sorted({r.step for r in rows}) == list(range(0, len(steps), 3))
    for step in {r.step for r in rows}:
        mine = [r for r in rows if r.step == step]
        assert len(mine) == len(layers)
        whole = steps[step]
        assert math.sqrt(sum(r.norm_c**2 for r in mine)) == pytest.approx(whole.norm_c, rel=1e-4)
        assert math.sqrt(sum(r.norm_a**2 for r in mine)) == pytest.approx(whole.norm_a, rel=1e-4)
        dot = sum(r.norm_c * r.norm_a * r.phi for r in mine)
        assert dot == pytest.approx(whole.norm_c * whole.norm_a * whole.phi, rel=1e-3, abs=1e-6)
        assert sum(r.mu for r in mine) <= whole.mu * (1 + 1e-4) + 1e-7


def test_heatmap_data_and_bins() -> None:
    rows = [
        {"step": s, "epoch": 1 + s // 4, "layer": i, "phi": 0.1 * s - i, "mu": float(s + i)}
        for s in range(0, 8, 2)
        for i in range(2)
    ]
    rows[0]["phi"] = float("nan")  # SQLite gives NaN back as NULL; both are "not stored"
    lmap = layer_map(["a.x", "a.y"], [3, 4], rows, "phi")
    assert lmap.steps == (0, 2, 4, 6) and lmap.epochs == (1, 1, 2, 2)
    assert lmap.values[0] == (None, 0.2, 0.4, pytest.approx(0.6))
    two = binned(lmap, 2)
    assert two.steps == (0, 4) and two.values[0] == (0.2, pytest.approx(0.5))
    summary = layer_summary(["a.x"], [3], rows)  # layer 1 has no name stored: `layer 1`
    assert [s["name"] for s in summary] == ["a.x", "layer 1"]
    assert summary[1]["mean_mu"] == pytest.approx(4.0) and summary[1]["last_mu"] == 7.0
    assert sum(s["mu_share"] for s in summary) == pytest.approx(1.0)
    assert short_names(["1.f.0.w", "1.f.1.w", "1.fc.b"]) == ["f.0.w", "f.1.w", "fc.b"]
    with pytest.raises(ValueError, match="unknown metric"):
        layer_map([], [], rows, "psi")


@pytest.fixture(scope="module")
def store_with_layers(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = str(tmp_path_factory.mktemp("layers") / "caat.db")
    options = ["--model", "cnn", "--epochs", "1", "--attack-steps", "2", "--eval-n", "50"]
    assert run_cli("train", "--db", db, *options, "--layer-stats", "2", "--name", "with") == 0
    assert run_cli("train", "--db", db, "--model", "linear", "--epochs", "1", "--name", "off") == 0
    return db


def test_layers_command_prints_plots_and_writes_json(
    store_with_layers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    png = tmp_path / "fig" / "phi.png"
    assert run_cli("layers", "with", "--db", store_with_layers, "--plot", str(png)) == 0
    text = capsys.readouterr().out
    assert "every 2 steps" in text and "features.2.0.weight" in text and "fc.bias" in text
    assert "Most of the conflict μ" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli("layers", "1", "--metric", "mu", "--json", "--db", store_with_layers) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["every"] == 2 and len(report["layers"]) == 11
    heat = report["heatmap"]
    assert heat["metric"] == "mu" and heat["steps"] == list(range(0, 9, 2))
    assert all(len(row) == len(heat["steps"]) for row in heat["values"])
    assert all(v >= 0 for row in heat["values"] for v in row)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["with", "--metric", "psi"], "--metric"),
        (["with", "--plot", "heat.txt"], "--plot"),
        (["off"], "--layer-stats"),
        (["nonexistent"], "no run"),
    ],
)
def test_layers_command_bad_input_is_one_line(
    store_with_layers: str, args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run_cli("layers", *args, "--db", store_with_layers) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err


def test_analysis_and_command_stay_torch_free() -> None:
    code = (
        "import sys, caat_app.analysis.layers, caat_app.cli.layers; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.slow
def test_bench_reports_what_layer_stats_cost() -> None:
    from caat_app.bench.training import run_bench

    report = run_bench(model="linear", steps=5, repeats=1, attack_steps=1, layer_every=7)
    layers = report["layer_stats"]
    caat_ms = report["ms_per_step"]["caat"]
    assert layers["every"] == 7 and layers["layers"] == 2
    assert layers["ms_per_step"] > 0
    assert layers["overhead"] == pytest.approx(layers["ms_per_step"] / caat_ms)
    without = caat_ms + report["logging_ms_per_step"]
    assert layers["caat_ms_per_step_without"] == pytest.approx(without)
    assert layers["caat_ms_per_step_with"] == pytest.approx(without + layers["ms_per_step"])
