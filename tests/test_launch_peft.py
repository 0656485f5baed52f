"""The launch form's PEFT fields and the runs tables' model-with-mode cell."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import run_app, run_cli, wait_for
from textual.pilot import Pilot
from textual.widgets import Button, Input, Select, Static, Switch

from caat_app.config import build_config
from caat_app.models.registry import PEFT_MODES
from caat_app.present import model_text
from caat_app.runs.manage import create_run
from caat_screens.app import CaatApp
from caat_screens.launch import LaunchScreen
from caat_screens.runs_table import run_cells
from caat_storage import Store

PEFT_ROWS = ("peft", "weights", "adapter_reduction", "lora_rank", "grad_checkpointing")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened


def _shown(form: LaunchScreen, name: str) -> bool:
    return bool(form.query_one(f"#row-{name}").display)


def test_peft_fields_follow_the_model_and_check_the_weights_file(
    store: Store, tmp_path: Path
) -> None:
    weights = tmp_path / "base.safetensors"
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        form = app.screen
        assert isinstance(form, LaunchScreen)
        assert not any(_shown(form, n) for n in (*PEFT_ROWS, "image_size"))  # a CNN
        assert not set(PEFT_ROWS) & set(form.values())
        form.query_one("#f-model", Select).value = "vit-micro"
        form.query_one("#f-peft", Select).value = "adapter"
        await pilot.pause()
        assert [_shown(form, n) for n in (*PEFT_ROWS, "image_size")] == [
            True, True, True, False, True, True,
        ]  # fmt: skip
        form.query_one("#f-adapter_reduction", Input).value = "4"
        form.query_one("#f-image_size", Input).value = "32"
        form.query_one("#f-weights", Input).value = str(weights)  # not there yet
        await pilot.pause()
        assert "no such file" in str(form.query_one("#err-weights", Static).render())
        assert form.query_one("#launch", Button).disabled
        weights.write_bytes(b"")
        form.query_one("#f-weights", Input).value = str(weights) + " "  # typed again
        await pilot.pause()
        assert not form.query_one("#launch", Button).disabled
        preview = str(form.query_one("#preview", Static).render())
        assert "--peft adapter" in preview and "--adapter-reduction 4" in preview
        cfg = build_config(form.values())
        assert (cfg.model, cfg.peft, cfg.adapter_reduction, cfg.image_size) == (
            "vit-micro", "adapter", 4, 32,
        )  # fmt: skip
        assert cfg.weights == str(weights.resolve())
        form.query_one("#f-peft", Select).value = "lora"
        await pilot.pause()
        assert _shown(form, "lora_rank") and not _shown(form, "adapter_reduction")
        form.query_one("#f-model", Select).value = "cnn"  # back to a CNN: nothing of PEFT
        await pilot.pause()
        assert not any(_shown(form, n) for n in PEFT_ROWS)
        assert _shown(form, "image_size")  # it holds a value, and it resamples CNN data too
        cfg = build_config(form.values())
        assert (cfg.peft, cfg.weights, cfg.image_size) == ("full", None, 32)
        assert not form.query_one("#launch", Button).disabled

    run_app(app, body)


def test_every_peft_mode_of_the_registry_reaches_the_config(store: Store) -> None:
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        form = app.screen
        assert isinstance(form, LaunchScreen)
        form.query_one("#f-model", Select).value = "swin-micro"
        form.query_one("#f-grad_checkpointing", Switch).value = True
        for mode in PEFT_MODES:
            form.query_one("#f-peft", Select).value = mode
            await pilot.pause()
            cfg = build_config(form.values())
            assert (cfg.peft, cfg.grad_checkpointing) == (mode, True)

    run_app(app, body)


def test_relaunch_of_a_peft_run_fills_its_fields(store: Store) -> None:
    cfg = build_config(
        {"model": "vit-micro", "peft": "lora", "lora_rank": 4, "image_size": 32, "epochs": 1}
    )
    create_run(store, cfg)
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.screen.query("DataTable").first().row_count == 1)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        form = app.screen
        assert isinstance(form, LaunchScreen)
        again = build_config(form.values())
        assert (again.model, again.peft, again.lora_rank, again.image_size) == (
            "vit-micro", "lora", 4, 32,
        )  # fmt: skip
        assert _shown(form, "lora_rank") and not _shown(form, "adapter_reduction")

    run_app(app, body)


def _row(config: object, dataset: str = "cub200", model: str = "swin-t") -> SimpleNamespace:
    text = config if isinstance(config, str) else json.dumps(config)
    return SimpleNamespace(dataset=dataset, model=model, config=text)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"peft": "adapter"}, "cub200/swin-t+adapter"),
        ({"peft": "lora"}, "cub200/swin-t+lora"),
        ({"peft": "full"}, "cub200/swin-t"),
        ({}, "cub200/swin-t"),  # a config from before PEFT existed
        ("{not json", "cub200/swin-t"),  # a damaged config does not take a table down
        ("[1, 2]", "cub200/swin-t"),
        ({"peft": "ada\x1bpter"}, "cub200/swin-t+ada\\x1bpter"),  # no raw ESC to the terminal
    ],
)
def test_model_text(config: object, expected: str) -> None:
    assert model_text(_row(config)) == expected


def test_both_runs_tables_show_the_peft_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "t.db"
    with Store.open(f"sqlite:///{db}") as st:
        create_run(st, build_config({"model": "vit-micro", "peft": "adapter", "image_size": 32}))
        create_run(st, build_config({"model": "cnn"}))
        runs = sorted(st.list_runs(), key=lambda r: r.id)
        cells = [str(run_cells(r, datetime.now(UTC))[2]) for r in runs]
    assert cells == ["digits/vit-micro+adapter", "digits/cnn"]
    assert run_cli("runs", "--db", str(db)) == 0
    out = capsys.readouterr().out
    assert "digits/vit-micro+adapter" in out and "digits/cnn" in out
