"""The lab's reports in the store: written whole, replaced by the same computation, gone
with their run, and read back as they were given (NaN as None)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caat_app.config import build_config
from caat_app.runs.manage import create_run
from caat_storage import Store, StoreError
from caat_storage.lab import SAMPLE_COLUMNS


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A fresh store on each back end (`[sqlite]`, `[postgres]`)."""
    with Store.open(store_url) as opened:
        yield opened


def columns(n: int, start: int = 0) -> dict[str, list[Any]]:
    ints = {"sample": list(range(start, start + n)), "label": [i % 3 for i in range(n)]}
    ints |= {"pred_c": [0] * n, "pred_a": [1] * n}
    floats = {name: [0.5 + i for i in range(n)] for name in SAMPLE_COLUMNS if name not in ints}
    return ints | floats


def test_a_report_and_its_rows_come_back_and_the_same_key_replaces(store: Store) -> None:
    run_id = create_run(store, build_config({"name": "r", "epochs": 1}))
    first = store.save_lab_report(
        "conflict", {"n": 4}, run_id=run_id, key="best", samples=columns(4)
    )
    other = store.save_lab_report(
        "conflict", {"n": 2}, run_id=run_id, key="last", samples=columns(2)
    )
    assert store.sample_conflicts(first) == columns(4)
    assert store.lab_stamp("conflict", run_id=run_id)[0] == other  # type: ignore[index]
    again = store.save_lab_report(
        "conflict", {"n": 3}, run_id=run_id, key="best", samples=columns(3, 7)
    )
    assert store.lab_report(first) is None and store.sample_conflicts(first)["sample"] == []
    assert [r.id for r in store.lab_reports("conflict", run_id=run_id)] == [again, other]
    assert store.sample_conflicts(again)["sample"] == [7, 8, 9]
    stamp = store.lab_stamp("conflict", run_id=run_id)
    store.update_lab_body(other, {"n": 2, "ablation": {"sweep": "s"}})
    newer = store.lab_stamp("conflict", run_id=run_id)
    assert newer is not None and newer[0] == other and newer != stamp  # a change moves the stamp
    store.delete_run(run_id)
    assert store.lab_reports("conflict") == [] and store.sample_conflicts(again)["sample"] == []


def test_bad_reports_are_refused_and_nothing_is_written(store: Store) -> None:
    run_id = create_run(store, build_config({"name": "r", "epochs": 1}))
    short = columns(3) | {"mu": [1.0, 2.0]}
    with pytest.raises(ValueError, match="differ in length"):
        store.save_lab_report("conflict", {}, run_id=run_id, samples=short)
    with pytest.raises(ValueError, match="lack phi"):
        no_phi = {k: v for k, v in columns(2).items() if k != "phi"}
        store.save_lab_report("conflict", {}, run_id=run_id, samples=no_phi)
    with pytest.raises(ValueError, match="unknown lab report kind"):
        store.save_lab_report("bench", {})
    with pytest.raises(ValueError, match="plain JSON"):
        store.save_lab_report("synth", {"x": object()})
    with pytest.raises(ValueError, match="no lab report 99"):
        store.update_lab_body(99, {})
    with pytest.raises(StoreError, match="no run 42"):
        store.save_lab_report("conflict", {}, run_id=42, samples=columns(2))
    assert store.lab_reports("conflict") == [] and store.lab_stamp("synth") is None


def test_synth_reports_without_a_run_newest_first(store: Store) -> None:
    a = store.save_lab_report("synth", {"rows": [1]}, key="linf")
    b = store.save_lab_report("synth", {"rows": [2]}, key="l2")
    assert store.lab_stamp("synth")[0] == b  # type: ignore[index]
    assert [r.id for r in store.lab_reports("synth")] == [b, a]


# One store for every example is deliberate: each saves the same kind and key, so each
# replaces the one before (and must leave none of its rows behind).
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=20))
def test_floats_round_trip_exactly_and_non_finite_become_none(
    store: Store, values: list[float]
) -> None:
    cols = columns(len(values)) | {"mu": values}
    report = store.save_lab_report("synth", {}, samples=cols)
    back = store.sample_conflicts(report)["mu"]
    assert back == [v if math.isfinite(v) else None for v in values]
    assert [r.id for r in store.lab_reports("synth")] == [report]
