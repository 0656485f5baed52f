"""`caat paper fig6a --scale smoke` end to end: workers train and evaluate, then the figure,
the table and the verdict are written; the same command again trains and measures nothing.

Shrunk further for the suite (`--epochs 1 --eval-n 50`, about a minute on two cores); the
full smoke scale is the same path with 10 epochs and 200 images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import run_cli

from caat_storage import Store


@pytest.mark.slow
def test_fig6a_smoke_runs_to_its_figure_table_and_verdict_then_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, out = str(tmp_path / "caat.db"), tmp_path / "out"
    args = ["paper", "fig6a", "--scale", "smoke", "--epochs", "1", "--eval-n", "50"]
    args += ["--jobs", "2", "--device", "cpu", "--db", db, "--out", str(out)]
    assert run_cli(*args) == 0
    printed = capsys.readouterr().out
    assert "6 queued now" in printed and "Hypervolume against the reference" in printed
    stem = "fig6a-smoke-e1"
    for name in (f"{stem}.png", f"{stem}-pgd.png", f"{stem}.csv", f"{stem}-verdict.txt"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / f"{stem}.json").read_text())
    assert report["missing"] == [] and len(report["runs"]) == 6
    front = report["fronts"][0]
    assert front["attack"] == "autoattack-fast" and len(front["report"]["points"]) == 6
    assert {p["family"] for p in front["report"]["points"]} == {"Vanilla AT", "CA-AT"}
    assert report["verdict"][0].startswith("AA = autoattack-fast at ε=0.3")
    assert "smoke scale" in (out / f"{stem}-verdict.txt").read_text()
    header = (out / f"{stem}.csv").read_text().splitlines()[0]
    assert header == "aa_attack,family,label,sa,aa,seeds,on_front,runs"
    with Store.open(f"sqlite:///{db}") as store:
        runs = store.sweep_runs("paper-fig6a-smoke-e1")
        assert [r.status for r in runs] == ["finished"] * 6, [r.error for r in runs]
        assert all(store.evals(r.id) for r in runs if r.id is not None)

    start = time.monotonic()
    assert run_cli(*args) == 0  # the same experiment again: nothing to train or measure
    again = capsys.readouterr().out
    assert "0 queued now, 6 already there" in again and "evaluations: 0 to measure" in again
    assert time.monotonic() - start < 20
