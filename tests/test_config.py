"""RunConfig: budgets, validation messages, presets and precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caat_app.config import (
    ConfigError,
    build_config,
    load_config_file,
    parse_budget,
)
from caat_app.present import format_budget
from caat_app.presets import PRESETS


@pytest.mark.parametrize(
    ("text", "value"),
    [("8/255", 8 / 255), ("0.3", 0.3), (" 2 / 255 ", 2 / 255), ("1e-2", 0.01), (0.5, 0.5)],
)
def test_budget_parses_fractions_and_numbers(text: str | float, value: float) -> None:
    assert parse_budget(text) == pytest.approx(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (8 / 255, "8/255"),
        (16 / 255, "16/255"),
        (0.3, "0.3"),
        (0.2, "0.2"),  # also 51/255, but written as a decimal
        (0.5, "0.5"),
        (1.0, "1"),
        (2.0, "2"),
        (0.123456, "0.123456"),
    ],
)
def test_budget_reads_as_people_write_it(value: float, text: str) -> None:
    assert format_budget(value) == text


@given(st.floats(min_value=1e-6, max_value=64, allow_nan=False))
def test_exact_budget_text_parses_back_to_the_same_float(eps: float) -> None:
    assert parse_budget(format_budget(eps, exact=True)) == eps


@given(st.integers(min_value=1, max_value=254).filter(lambda k: (k * 100) % 255))
def test_pixel_grid_budgets_that_are_no_short_decimal_read_as_fractions(k: int) -> None:
    assert format_budget(k / 255) == format_budget(k / 255, exact=True) == f"{k}/255"


@pytest.mark.parametrize("text", ["abc", "8/0", "nan", "inf", "1/2/3", ""])
def test_budget_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_budget(text)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"gamma": 1.5}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"lam": -0.1}, "lam"),
        ({"lam": 1.01}, "lam"),
        ({"eps": "-0.1"}, "eps"),
        ({"eps": "eight"}, "eps"),
        ({"epochs": 0}, "epochs"),
        ({"model": "vgg"}, "model"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"loss": "mse"}, "loss"),
        ({"attack": "cw"}, "attack"),
        ({"device": "tpu"}, "device"),
        ({"bogus": 1}, "bogus"),
        ({"loss": "trades", "attack": "apgd-ce"}, "attack"),
    ],
)
def test_bad_values_name_their_field_in_one_line(options: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(options)
    message = str(info.value)
    assert message.startswith(f"{field}:")
    assert "\n" not in message


def test_unknown_choice_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"linear.*cnn.*resnet18.*resnet34.*wrn28-10"):
        build_config({"model": "vgg"})


def test_gamma_one_and_lambda_bounds_are_valid() -> None:
    assert build_config({"gamma": 1.0}).gamma == 1.0
    assert build_config({"lam": 0.0}).lam == 0.0
    assert build_config({"lam": 1.0}).lam == 1.0


def test_dataset_sets_its_budget_unless_given() -> None:
    assert build_config({}).eps == pytest.approx(0.3)
    cifar = build_config({"dataset": "cifar10"})
    assert cifar.eps == pytest.approx(8 / 255)
    assert cifar.step_size == pytest.approx(2 / 255)
    assert build_config({"dataset": "cifar10", "eps": "16/255"}).eps == pytest.approx(16 / 255)


def test_preset_fills_the_paper_recipe_and_options_override_it() -> None:
    cfg = build_config({"preset": "paper-cifar10-r18", "epochs": 3, "lr": 0.1})
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.lr) == ("cifar10", "resnet18", 3, 0.1)
    assert cfg.momentum == 0.9
    assert cfg.eps == pytest.approx(8 / 255) and cfg.step_size == pytest.approx(2 / 255)
    assert cfg.attack_steps == 10
    assert {"paper-cifar100-r34", "paper-cifar10-wrn28-10"} <= set(PRESETS)
    with pytest.raises(ConfigError, match="paper-cifar10-r18"):
        build_config({"preset": "paper-mnist"})


def test_file_values_sit_between_preset_and_options(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('method = "vanilla"\nlam = 0.25\nattack-steps = 3\neps = "4/255"\n')
    values = load_config_file(path)
    cfg = build_config({"lam": 0.75}, values)
    assert (cfg.method, cfg.lam, cfg.attack_steps) == ("vanilla", 0.75, 3)
    assert cfg.eps == pytest.approx(4 / 255)


def test_unreadable_or_invalid_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("method = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(bad)


def test_config_round_trips_through_json() -> None:
    from caat_app.config import config_from_json

    cfg = build_config({"method": "vanilla", "eps": "8/255", "name": "x"})
    assert config_from_json(cfg.model_dump(mode="json")) == cfg


def test_field_errors_names_each_bad_field() -> None:
    from caat_app.config import field_errors

    errors = field_errors({"gamma": 2, "eps": "x", "model": "vgg", "lam": 0.3})
    assert set(errors) == {"gamma", "eps", "model"}
    assert "8/255" in errors["eps"]
    assert field_errors({"gamma": 0.5}) == {}
    assert "paper-cifar10-r18" in field_errors({"preset": "nope"})["preset"]


def test_command_line_recreates_the_config() -> None:
    import shlex

    from caat_app.config import command_line

    cfg = build_config(
        {
            "method": "vanilla",
            "lam": 0.25,
            "eps": "8/255",
            "name": "my run",
            "bf16": True,
            "lr": 0.1234567891234,
        }
    )
    line = command_line(cfg)
    assert "--eps 8/255" in line and "'my run'" in line and "--bf16" in line
    words = shlex.split(line)[2:]
    options: dict[str, object] = {}
    while words:
        flag = words.pop(0).removeprefix("--").replace("-", "_")
        options[flag] = True if not words or words[0].startswith("--") else words.pop(0)
    assert build_config(options) == cfg


def test_adamw_is_a_choice_and_refuses_nesterov_in_one_line() -> None:
    cfg = build_config({"optimizer": "adamw", "momentum": 0.85})
    assert (cfg.optimizer, cfg.momentum) == ("adamw", 0.85)
    assert build_config({}).optimizer == "sgd"
    with pytest.raises(ConfigError, match="nesterov: SGD only") as info:
        build_config({"optimizer": "adamw", "nesterov": True})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="sgd"):
        build_config({"optimizer": "lamb"})
