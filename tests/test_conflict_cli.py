"""`caat conflict RUN`: bad input is one line and exit 2; on a real (tiny) digits run it
shows the top-k images as half blocks, writes the PNG and stores the report (`--show`
prints it again); and `--ablate` trains its sweep end to end (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from caat_app.config import RunConfig
from caat_app.lab.conflict_report import top_order
from caat_app.runs.manage import create_run
from caat_storage import Store


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished 2-epoch digits CNN (Vanilla AT), run 1 of its own store; the store's path."""
    root = tmp_path_factory.mktemp("conflict-cli")
    db = str(root / "store" / "caat.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAAT_HOME", str(root / "home"))
        args = ["train", "--method", "vanilla", "--epochs", "2", "--device", "cpu"]
        assert run_cli(*args, "--name", "tiny", "--db", db) == 0
    return db


def stored_report(db: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run 1's newest stored report, as `caat conflict 1 --show --json` prints it."""
    capsys.readouterr()
    assert run_cli("conflict", "1", "--show", "--json", "--db", db) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--ablate", "abc"], "--ablate"),
        (["--ablate", "0%"], "--ablate"),
        (["--ablate", "150%"], "--ablate"),
        (["--ablate", "nan"], "--ablate"),
        (["--ablate", "10%", "--n", "100"], "drop --n"),
        (["--seeds", "0,1"], "give --ablate too"),
        (["--ablate", "10%", "--seeds", "0,0"], "--seeds"),
        (["--png", "x.gif"], "--png"),
        (["--checkpoint", "middle"], "--checkpoint"),
        (["--top", "0"], "--top"),
        (["--n", "-3"], "--n"),
    ],
)
def test_bad_options_are_one_line_before_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    db = tmp_path / "none" / "caat.db"
    assert run_cli("conflict", "1", *args, "--db", str(db)) == 2
    assert says in _one_error_line(capsys)
    assert not db.exists()  # found before the store was opened


def test_an_unknown_or_unfinished_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "caat.db")
    with Store.open(f"sqlite:///{db}") as store:
        queued = create_run(store, RunConfig(epochs=1))
    assert run_cli("conflict", "99", "--db", db) == 2
    assert "99" in _one_error_line(capsys)
    assert run_cli("conflict", str(queued), "--db", db) == 2
    assert "queued" in _one_error_line(capsys)
    assert run_cli("conflict", str(queued), "--show", "--db", db) == 2
    assert "no per-sample report yet" in _one_error_line(capsys)
    assert run_cli("conflict", str(queued), "--show", "--ablate", "10%", "--db", db) == 2
    assert "cannot --ablate" in _one_error_line(capsys)


@pytest.mark.slow
def test_a_subset_shows_its_top_k_as_half_blocks_and_png(
    trained: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "top.png"
    assert (
        run_cli("conflict", "tiny", "--n", "60", "--top", "4", "--png", str(png), "--db", trained)
        == 0
    )
    out = capsys.readouterr().out
    assert "the 4 most conflicting training images" in out and "▀" in out
    assert "60 training images" in out and "Spearman" in out and "per class" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = stored_report(trained, capsys)
    assert report["n"] == 60 and len(report["top"]) == 4
    assert len({s["label"] for s in report["top"]} | set(report["samples"]["label"])) == 10
    mu = report["samples"]["mu"]
    assert [s["mu"] for s in report["top"]] == [mu[i] for i in top_order(mu, 4)]
    assert all(len(s["pixels"]) == 1 and len(s["pixels"][0]) == 8 for s in report["top"])


@pytest.mark.slow
def test_the_whole_training_split_as_json(trained: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("conflict", "1", "--json", "--top", "8", "--db", trained) == 0
    printed = json.loads(capsys.readouterr().out)
    assert stored_report(trained, capsys) == printed  # the store gives back what was computed
    assert printed["n"] == 1257  # digits: 70% of 1797
    assert sorted(printed["samples"]["index"]) == list(range(1257))
    assert all(-1 <= v <= 1 for v in printed["samples"]["phi"])
    assert all(v >= 0 for v in printed["samples"]["mu"])
    assert printed["protocol"].startswith("per-sample gradients over all trainable parameters")


@pytest.mark.slow
def test_ablation_end_to_end(trained: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("conflict", "1", "--ablate", "10%", "--jobs", "2", "--db", trained) == 0
    out = capsys.readouterr().out
    assert "ablation sweep ablate-1-10pct" in out and "SA-AA points" in out
    assert "random (control)" in out and "Targeted minus random removal" in out
    report = stored_report(trained, capsys)
    ablation = report["ablation"]
    mu, index = report["samples"]["mu"], report["samples"]["index"]
    count = round(0.1 * len(mu))
    assert ablation["drops"]["top"] == sorted(index[i] for i in top_order(mu, count))
    assert len(ablation["drops"]["random"]) == count
    with Store.open(f"sqlite:///{trained}") as store:
        runs = store.sweep_runs("ablate-1-10pct")
        assert [r.status for r in runs] == ["finished", "finished"], [r.error for r in runs]
        drops = sorted(tuple(json.loads(r.config)["drop"]) for r in runs)
    assert drops == sorted([tuple(ablation["drops"]["top"]), tuple(ablation["drops"]["random"])])
    variants = {v["variant"]: v for v in ablation["variants"]}
    assert variants["unchanged"]["runs"] == [1] and "d_aa" in variants["top"]
