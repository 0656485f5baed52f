"""The paper's PEFT experiments (Figs. 4 and 5): presets, plans at both scales, `--labels`,
`--weights`, and the smoke scale's two stages end to end (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import run_cli

from caat_app.config import build_config, resolve_config
from caat_app.data.splits import load_dataset
from caat_app.errors import ConfigError
from caat_app.paper.catalogue import EXPERIMENTS
from caat_app.paper.peft import HELD_OUT_LABELS, PRETRAIN_LABELS, STAGE1_WEIGHTS
from caat_app.paper.scale import Overrides, on_stage1, resolve
from caat_app.presets import PRESETS
from caat_app.runs.stored import config_of
from caat_storage import Store

PEFT_PRESETS = {
    "paper-peft-swin-t-cub": ("swin-t", "cub200", 60, 0.05),
    "paper-peft-swin-t-dogs": ("swin-t", "dogs", 40, 1e-4),
    "paper-peft-vit-b16-cub": ("vit-b16", "cub200", 60, 0.05),
    "paper-peft-vit-b16-dogs": ("vit-b16", "dogs", 40, 1e-4),
}
LAMBDAS, GAMMAS = [0.0, 0.5, 1.0], [0.8, 0.9, 1.0]


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert run_cli(*args) == 0
    return json.loads(capsys.readouterr().out)


# -- presets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PEFT_PRESETS))
def test_peft_presets_build_and_every_value_names_its_source(name: str) -> None:
    model, dataset, epochs, lr = PEFT_PRESETS[name]
    cfg, origins = resolve_config({"preset": name})
    assert (cfg.model, cfg.dataset, cfg.epochs, cfg.peft) == (model, dataset, epochs, "adapter")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay) == ("adamw", lr, 0.01)
    assert (cfg.image_size, cfg.bn, cfg.attack, cfg.norm) == (224, "standard", "pgd", "linf")
    assert (cfg.eps, cfg.alpha, cfg.attack_steps) == (8 / 255, 2 / 255, 10)
    values = PRESETS[name].values
    assert "bn" not in values and "weights" not in values
    for field in values:
        origin = origins[field]
        assert origin.startswith(f"preset {name}: "), field
        assert "paper §5" in origin or "caat's choice" in origin, (field, origin)
    assert "Hua et al. 2023" in origins["lr"] and "Hua et al. 2023" in origins["adapter_reduction"]


def test_swin_t_presets_say_no_robust_swin_t_checkpoint_is_published() -> None:
    source = PRESETS["paper-peft-swin-t-cub"].sources["model"]
    assert "Swin-T" in source and "no robust Swin-T checkpoint" in source


# -- the catalogue and the plans --------------------------------------------------------------


def test_fig4_and_fig5_are_available_with_the_papers_grids() -> None:
    fig4, fig5 = EXPERIMENTS["fig4"], EXPERIMENTS["fig5"]
    assert fig4.available and fig5.available
    assert [g.preset for g in fig4.grids] == ["paper-peft-swin-t-cub", "paper-peft-swin-t-dogs"]
    assert [g.preset for g in fig5.grids] == ["paper-peft-vit-b16-dogs"]
    for grid in (*fig4.grids, *fig5.grids):
        assert (list(grid.lam), list(grid.gamma)) == (LAMBDAS, GAMMAS)


def test_fig4_paper_scale_trains_both_panels_on_the_given_weights(tmp_path: Path) -> None:
    weights = tmp_path / "swin_t_robust.pth"
    weights.write_bytes(b"not read at planning time")
    plan = resolve("fig4", "paper", Overrides(weights=str(weights)))
    assert plan.pretrain == () and plan.sweep == "paper-fig4" and len(plan.runs) == 12
    for dataset in ("cub200", "dogs"):
        runs = [r.config for r in plan.runs if r.config.dataset == dataset]
        assert sorted(c.lam for c in runs if c.method == "vanilla") == LAMBDAS
        assert sorted(c.gamma for c in runs if c.method == "caat") == GAMMAS
    assert {r.config.weights for r in plan.runs} == {str(weights.resolve())}
    assert {(r.config.model, r.config.peft) for r in plan.runs} == {("swin-t", "adapter")}
    specs = {spec for r in plan.runs for spec in r.evaluations}
    assert {(s.attacks, s.budgets, s.n) for s in specs} == {(("autoattack", "pgd"), (8 / 255,), 0)}


def test_fig5_paper_scale_dry_run_shows_its_runs_and_gpu_hours_and_stores_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = str(tmp_path / "caat.db")
    data = _json(capsys, "paper", "fig5", "--dry-run", "--json", "--db", db)
    assert data["pretrain"] == [] and len(data["runs"]) == 6
    assert {(r["model"], r["dataset"], r["weights"]) for r in data["runs"]} == {
        ("vit-b16", "dogs", None)
    }
    assert any("fig5 needs --weights" in note for note in data["notes"])
    assert data["estimate"]["total_gpu_hours"] > data["estimate"]["train_gpu_hours"] > 0
    assert any("PEFT" in line for line in data["estimate"]["model"])
    assert not Path(db).exists()


@pytest.mark.parametrize("name", ["fig4", "fig5"])
def test_smoke_plan_pretrains_then_fine_tunes_the_held_out_digits(name: str) -> None:
    plan = resolve(name, "smoke")
    (stage1,) = plan.pretrain
    assert plan.pretrain_sweep == f"paper-{name}-smoke-pretrain"
    pre = stage1.config
    assert (pre.model, pre.peft, pre.labels, pre.weights) == (
        "vit-micro",
        "full",
        (0, 1, 2, 3, 4),
        None,
    )
    assert pre.labels == PRETRAIN_LABELS and pre.method == "vanilla"
    assert len(plan.runs) == 6  # fig4's two panels fold into one digits grid
    configs = [r.config for r in plan.runs]
    assert sorted(c.lam for c in configs if c.method == "vanilla") == LAMBDAS
    assert sorted(c.gamma for c in configs if c.method == "caat") == GAMMAS
    stand_in = STAGE1_WEIGHTS.format(sweep=plan.pretrain_sweep)
    for c in configs:
        assert (c.model, c.peft, c.labels, c.image_size) == (
            "vit-micro",
            "adapter",
            HELD_OUT_LABELS,
            16,
        )
        assert c.weights == stand_in
    moved = on_stage1(plan, "/runs/1/best.pt")
    assert {r.config.weights for r in moved.runs} == {"/runs/1/best.pt"}
    assert [r.config.name for r in moved.runs] == [c.name for c in configs]


def test_smoke_dry_run_json_shows_both_stages(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = str(tmp_path / "caat.db")
    data = _json(capsys, "paper", "fig4", "--scale", "smoke", "--dry-run", "--json", "--db", db)
    assert data["pretrain_sweep"] == "paper-fig4-smoke-pretrain"
    assert [r["labels"] for r in data["pretrain"]] == [list(PRETRAIN_LABELS)]
    assert {tuple(r["labels"]) for r in data["runs"]} == {HELD_OUT_LABELS}
    assert len(data["estimate"]["runs"]) == 7  # stage 1 is costed too
    assert not Path(db).exists()


@pytest.mark.parametrize("name", ["fig4", "fig5"])
def test_paper_scale_without_weights_is_one_line_exit_2(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "caat.db")
    assert run_cli("paper", name, "--db", db) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {name} needs --weights: a robust")
    assert "README's Fine-tuning section" in lines[0] and not Path(db).exists()


# -- --labels ---------------------------------------------------------------------------------


def test_labels_keep_those_classes_in_every_split_relabelled_in_order() -> None:
    whole = load_dataset("digits")
    kept = load_dataset("digits", labels=(7, 2, 9))
    assert kept.num_classes == 3
    for split in ("train", "val", "test"):
        x, y = getattr(whole, f"x_{split}"), getattr(whole, f"y_{split}")
        kx, ky = getattr(kept, f"x_{split}"), getattr(kept, f"y_{split}")
        mask = (y == 7) | (y == 2) | (y == 9)
        assert torch.equal(kx, x[mask])
        expected = torch.where(y[mask] == 7, 0, torch.where(y[mask] == 2, 1, 2))
        assert torch.equal(ky, expected)
        assert set(ky.tolist()) == {0, 1, 2}


def test_labels_reach_the_config_from_the_command_line_and_are_checked() -> None:
    assert build_config({"labels": "5,6,7,8,9"}).labels == (5, 6, 7, 8, 9)
    for bad, says in (("5", "at least two"), ("5,5", "each class once"), ("3,10", "0 to 9")):
        with pytest.raises(ConfigError, match=f"labels: .*{says}"):
            build_config({"labels": bad})


def test_labels_option_of_train_is_one_line_exit_2_when_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "caat.db")
    assert run_cli("train", "--labels", "4,4", "--db", db) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: labels:")


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_fig4_smoke_pretrains_fine_tunes_and_ends_on_a_front_then_reuses_stage_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, out = str(tmp_path / "caat.db"), tmp_path / "out"
    args = ["paper", "fig4", "--scale", "smoke", "--epochs", "1", "--eval-n", "20"]
    args += ["--jobs", "2", "--device", "cpu", "--db", db, "--out", str(out)]
    assert run_cli(*args) == 0
    printed = capsys.readouterr().out
    assert "stage 1 as sweep paper-fig4-smoke-e1-pretrain: 1 queued now" in printed
    assert "6 queued now" in printed and "Hypervolume against the reference" in printed
    report = json.loads((out / "fig4-smoke-e1.json").read_text())
    assert report["missing"] == [] and len(report["runs"]) == 6
    points = report["fronts"][0]["report"]["points"]
    assert {p["family"] for p in points} == {"Vanilla AT", "CA-AT"} and len(points) == 6
    with Store.open(f"sqlite:///{db}") as store:
        (stage1,) = store.sweep_runs("paper-fig4-smoke-e1-pretrain")
        best = str(Path(stage1.run_dir) / "best.pt")
        runs = store.sweep_runs("paper-fig4-smoke-e1")
        assert [r.status for r in runs] == ["finished"] * 6, [r.error for r in runs]
        assert {config_of(r).weights for r in runs} == {best}

    assert run_cli(*args) == 0  # again: stage 1 is reused, nothing trains or is measured
    again = capsys.readouterr().out
    assert "0 queued now, 1 there" in again and "0 queued now, 6 already there" in again
    assert "evaluations: 0 to measure" in again
