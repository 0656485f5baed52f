"""`caat bench --only store-size`: the big store it writes, and what its report holds.

Nothing here is timed: the numbers are the benchmark's to report, not a test's to hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from caat_app.bench.store_size import build_store, store_size_lines
from caat_storage import Store
from caat_storage.firstpage import first_page

PROBES = {
    "caat runs",
    "caat runs --limit 1000",
    "caat runs --json",
    "dashboard first page",
    "store pages",
    "caat runs --all",
    "caat runs --all --json",
}


def test_the_bulk_store_reads_like_one_caat_wrote(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    report = build_store(url, 250)
    assert report["runs"] == 250 and report["config_bytes_mean"] > 500
    with Store.open(url) as store:
        assert store.count_runs() == 250
        assert dict(store.list_sweeps()) == {
            "grid-0002": {"finished": 44, "failed": 2, "cancelled": 2, "diverged": 2},
            "grid-0001": {"finished": 85, "failed": 5, "cancelled": 5, "diverged": 5},
            "grid-0000": {"finished": 85, "failed": 5, "cancelled": 5, "diverged": 5},
        }
        runs = store.list_runs()
        assert [r.id for r in runs] == list(range(250, 0, -1))
        assert report["newest"] == runs[0].name  # what the dashboard probe waits for
        root = store.runs_root()
        for run in runs:
            config = json.loads(run.config)
            assert config["name"] == run.name and config["method"] == run.method
            assert run.run_dir == str(root / str(run.id))
            assert (run.error is not None) == (run.status == "failed")
            assert run.created_at.tzinfo is not None
        assert store.count_runs(search="caat") == 125  # every other run is CA-AT
    page = first_page(url, 100)
    assert page is not None and page[1] == 250
    assert [r.id for r in page[0]] == list(range(250, 150, -1))


def test_only_refuses_an_unknown_section_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("bench", "--only", "store-size,speed") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: --only: unknown 'store-size,speed'")
    assert captured.err.count("\n") == 1 and captured.out == ""


@pytest.mark.slow
def test_store_size_reports_every_reader_and_what_it_saw(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ("--only", "store-size", "--store-runs", "150", "--repeats", "1", "--json")
    assert run_cli("bench", *args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"store_size"}  # only the section asked for ran
    size = report["store_size"]
    assert size["runs"] == 150 and set(size["probes"]) == PROBES
    probes = size["probes"]
    for probe in probes.values():
        assert probe["seconds"] > 0 and probe["peak_rss_mib"] > 0
    assert probes["caat runs"]["last_line"] == (
        "showing 50 of 150 runs; --all or --limit N for more"
    )
    assert "showing" not in probes["caat runs --limit 1000"]["last_line"]
    assert probes["caat runs --json"]["records"] == 50
    assert probes["caat runs --all --json"]["records"] == 150
    assert probes["dashboard first page"]["rows"] == 100
    assert probes["dashboard first page"]["total"] == 150
    assert probes["store pages"]["found"] == {
        "newest": [100, 150],
        "filter 'cifar10 caat', sort PGD": [75, 75],
        "filter one sweep, sort SA": [0, 0],  # grid-0420 needs 42 100 runs
    }
    lines = store_size_lines(size)
    assert len(lines) == 2 + len(PROBES) and lines[0].startswith("store of 150 runs")
    assert any(line.startswith("  caat runs --all: ") and "once" in line for line in lines)
