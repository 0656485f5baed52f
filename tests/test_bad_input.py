"""Bad input and hostile conditions: one line `error: ...`, exit code 2, nothing written.

Integers past 64 bits, infinite floats, names with control characters, a config file
that is not text, damaged checkpoints and a sweep that does not exist: each is refused
where it enters, before the store is touched.
"""

from __future__ import annotations

import collections
import pickle
import shutil
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_app, run_cli, wait_for
from hypothesis import given
from hypothesis import strategies as st
from textual.pilot import Pilot
from textual.widgets import DataTable

from caat_app.present import visible
from caat_storage import Store

BIG = str(2**70)  # 1180591620717411303424: past SQLite's signed 64-bit INTEGER
HUGE = "9" * 5000  # past Python's own limit on int() of a text (4300 digits)
CONTROLS = ["\x1b[31mred", "a\nb", "tab\there", "bell\x07", "del\x7f", "c1\x85nel", "csi\x9b2J"]


def one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    """The one error line of a command that must have failed with exit code 2."""
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def old_run(db: str, name: str) -> int:
    """A run stored as an older build stored it: no rule on its name."""
    with Store.open(f"sqlite:///{db}") as store:
        return store.create_run(
            name=name,
            config={"eps": 0.3, "name": name},
            method="caat",
            param=0.8,
            dataset="digits",
            model="cnn",
            eps=0.3,
            epochs_total=1,
        )


def names(db: str) -> list[str]:
    with Store.open(f"sqlite:///{db}") as store:
        return [r.name for r in store.list_runs()]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "caat.db")


# --------------------------------------------------------------------------- 1. 64 bits

STORE_UNTOUCHED = [
    (["train", "--epochs", "1" + "0" * 26], "epochs: must be below 2**63"),
    (["train", "--seed", BIG], "seed: must be below 2**63"),
    (["train", "--drop", f"3,{BIG}"], "must be below 2**63"),
    (["sweep", "--name", "s", "--seed", f"0,{BIG}"], "seed: must be below 2**63"),
    (["show", "99999999999999999999999"], "below 2**63"),
    (["show", HUGE], "(5000 digits)"),
    (["export", BIG], "below 2**63"),
    (["rename", BIG, "x"], "below 2**63"),
    (["tag", BIG, "x"], "below 2**63"),
    (["delete", BIG, "--yes"], "below 2**63"),
    (["cancel", BIG], "below 2**63"),
    (["cancel", "--eval", BIG], "--eval"),
    (["eval", "1", BIG], "below 2**63"),
    (["eval", "1", "--n", BIG], "--n"),
    (["compare", "1", BIG], "below 2**63"),
    (["conflict", BIG], "below 2**63"),
    (["runs", "--limit", BIG], "--limit"),
]


@pytest.mark.parametrize(
    ("args", "says"), STORE_UNTOUCHED, ids=[" ".join(a)[:40] for a, _ in STORE_UNTOUCHED]
)
def test_integers_past_64_bits_are_refused_before_the_store(
    args: list[str], says: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(capsys, run_cli(*args, "--db", db))
    assert says in line
    assert not Path(db).exists()  # refused while parsing: the store was never opened


def test_the_largest_64_bit_seed_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("train", "--seed", str(2**63 - 1), "--dry-run") == 0
    assert f"--seed {2**63 - 1}" in capsys.readouterr().out


# --------------------------------------------------------------------------- 2. inf


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--lr", "inf"),
        ("--lr", "-inf"),
        ("--weight-decay", "inf"),
        ("--beta", "inf"),
        ("--momentum", "nan"),
        ("--lr", "nan"),
        ("--lam", "inf"),
        ("--gamma", "-inf"),
    ],
)
def test_infinite_floats_are_refused_like_nan(
    option: str, value: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(capsys, run_cli("train", option, value, "--epochs", "1", "--db", db))
    assert option.removeprefix("--").replace("-", "_") in line
    assert not Path(db).exists()


@pytest.mark.parametrize("value", ["inf", "+inf", "-inf", "nan"])
def test_infinite_floats_in_a_config_file_are_refused(
    value: str, tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "f.toml"
    config.write_text(f"epochs = 1\nlr = {value}\n")
    line = one_line_error(capsys, run_cli("train", "--config", str(config), "--db", db))
    assert line.startswith("error: lr: ")
    assert not Path(db).exists()


# --------------------------------------------------------------------------- 3. names


@pytest.mark.parametrize("name", [*CONTROLS, "", "   ", "line\u2028sep"])
def test_a_name_with_control_characters_or_none_is_refused_at_creation(
    name: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(capsys, run_cli("train", "--name", name, "--epochs", "1", "--db", db))
    assert "error: name: a run name cannot" in line
    assert not Path(db).exists()


@pytest.mark.parametrize("name", [*CONTROLS, ""])
def test_a_name_with_control_characters_is_refused_at_rename(
    name: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(db).parent.mkdir()
    run_id = old_run(db, "kept")
    line = one_line_error(capsys, run_cli("rename", str(run_id), name, "--db", db))
    assert "a run name cannot" in line
    assert names(db) == ["kept"]


def test_a_config_files_name_is_held_to_the_same_rule(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "n.toml"
    config.write_text('name = "a\\u001b[2Jb"\nepochs = 1\n')
    line = one_line_error(capsys, run_cli("train", "--config", str(config), "--db", db))
    assert "name: a run name cannot contain" in line
    assert not Path(db).exists()


def test_an_old_name_with_escapes_reaches_the_terminal_escaped(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(db).parent.mkdir()
    evil = "evil\x1b[31mRED\x1b[0m\x07\x9b2J\nline2\x7f"
    run_id = old_run(db, evil)
    for args in (["runs"], ["show", str(run_id)]):
        assert run_cli(*args, "--db", db) == 0
        out = capsys.readouterr().out
        assert not any(unicodedata.category(ch) == "Cc" for ch in out.replace("\n", ""))
        assert "evil\\x1b[31mRED\\x1b[0m\\x07\\x9b2J\\x0aline2\\x7f" in out


def test_the_dashboards_runs_table_shows_an_old_name_escaped(db: str) -> None:
    from caat_screens.app import CaatApp

    Path(db).parent.mkdir()
    old_run(db, "evil\x1b]0;owned\x07\x1b[2J")
    with Store.open(f"sqlite:///{db}") as store:
        app = CaatApp(store, poll_interval=0.2, gpus=[])

        def first_name() -> str:
            table = app.screen.query_one(DataTable)
            return str(table.get_row_at(0)[0]) if table.row_count else ""

        async def body(pilot: Pilot[None]) -> None:
            await wait_for(pilot, lambda: first_name() != "")
            assert first_name() == "evil\\x1b]0;owned\\x07\\x1b[2J"

        run_app(app, body)


@given(st.text())
def test_visible_leaves_no_control_character_and_keeps_printable_text(text: str) -> None:
    shown = visible(text)
    assert not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in shown)
    if not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text):
        assert shown == text


# --------------------------------------------------------------------------- 4. not text


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xff\xfe\x00", "is not UTF-8 text (byte 0xff at offset 0)"),
        (b'epochs = 1\nname = "caf\xe9"\n', "is not UTF-8 text (byte 0xe9"),
        (b"epochs = 1\x00\n", "is not valid TOML"),
        (b"seed = " + HUGE.encode() + b"\n", "is not valid TOML"),
        (bytes(range(256)), "is not UTF-8 text"),
    ],
    ids=["bom-nul", "latin-1", "nul", "5000-digits", "all-bytes"],
)
def test_a_config_file_that_is_not_toml_text_is_one_line(
    content: bytes, says: str, tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_bytes(content)
    for command in (["train"], ["sweep", "--name", "s"]):
        line = one_line_error(capsys, run_cli(*command, "--config", str(config), "--db", db))
        assert says in line
    assert not Path(db).exists()


# --------------------------------------------------------------------------- 5. checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A tiny finished run: its store, and its folder (whose best.pt tests damage)."""
    db = str(tmp_path_factory.mktemp("badin-ckpt") / "caat.db")
    tiny = ("--epochs", "1", "--model", "linear", "--attack-steps", "2", "--eval-steps", "2")
    assert run_cli("train", "--db", db, *tiny) == 0
    with Store.open(f"sqlite:///{db}") as store:
        (run,) = store.list_runs()
    return db, Path(run.run_dir)


def _pickle_refused(path: Path) -> None:
    """A plain pickle of a class: what `weights_only=True` will not unpickle."""
    path.write_bytes(pickle.dumps({"model": collections.OrderedDict(w=collections.Counter())}))


def _torch(obj: object) -> Callable[[Path], None]:
    def save(path: Path) -> None:
        import torch

        torch.save(obj, path)

    return save


DAMAGE: dict[str, Callable[[Path], None]] = {
    "garbage": lambda p: p.write_bytes(bytes(range(7, 250)) * 4),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "non-tensors": _torch({"model": {"weight": "not a tensor"}, "epoch": 1}),
    "a-list": _torch([1, 2, 3]),
    "no-model": _torch({"epoch": 1, "step": 3}),
    "pickle-refused": _pickle_refused,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_one_line_and_records_no_evaluation(
    damage: str, trained: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, run_dir = trained
    best = run_dir / "best.pt"
    keep = run_dir / "best.pt.keep"
    shutil.copyfile(best, keep)
    try:
        DAMAGE[damage](best)
        args = ("1", "--attacks", "fgsm", "--n", "20", "--device", "cpu", "--db", db)
        line = one_line_error(capsys, run_cli("eval", *args))
        assert "run 1: its best checkpoint" in line
        assert "empty" in line if damage == "empty" else "not a checkpoint caat wrote" in line
        with Store.open(f"sqlite:///{db}") as store:
            assert store.eval_jobs() == []  # refused before a job was recorded
        line = one_line_error(capsys, run_cli("conflict", "1", "--device", "cpu", "--db", db))
        assert "run 1: its best checkpoint" in line
    finally:
        shutil.move(keep, best)


def test_the_undamaged_checkpoint_still_evaluates(
    trained: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = trained
    args = ("1", "--attacks", "fgsm", "--n", "20", "--device", "cpu", "--json", "--db", db)
    assert run_cli("eval", *args) == 0
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------- 6. no sweep


@pytest.mark.parametrize("command", ["front", "eval"])
def test_a_sweep_that_does_not_exist_is_one_line(
    command: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(capsys, run_cli(command, "--sweep", "nosuch", "--db", db))
    assert line == "error: --sweep: no sweep named 'nosuch'"
    assert names(db) == []
