"""Properties of the chart helpers: what the monitor's plots rely on."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caat_screens.series import downsample, ema, eta_seconds, log10_ticks

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
widths = st.integers(min_value=1, max_value=60)


@st.composite
def series(draw: st.DrawFn, max_size: int = 600) -> tuple[list[float], list[float]]:
    ys = draw(st.lists(finite, min_size=1, max_size=max_size))
    return [float(i) for i in range(len(ys))], ys


@given(series(), widths)
def test_downsample_keeps_global_extremes(data: tuple[list[float], list[float]], width: int):
    xs, ys = data
    _, dy = downsample(xs, ys, width)
    assert min(dy) == min(ys)
    assert max(dy) == max(ys)


@given(series(), widths)
def test_downsample_bounded_and_ordered(data: tuple[list[float], list[float]], width: int):
    xs, ys = data
    dx, dy = downsample(xs, ys, width)
    assert len(dx) == len(dy) <= 2 * width + 2
    assert dx == sorted(dx)
    assert len(set(dx)) == len(dx)  # no point twice
    # Every kept point is a real point of the input.
    pairs = set(zip(xs, ys, strict=True))
    assert all(p in pairs for p in zip(dx, dy, strict=True))
    # The x range does not shrink.
    assert (dx[0], dx[-1]) == (xs[0], xs[-1])


@given(series(max_size=40), st.integers(min_value=20, max_value=100))
def test_downsample_identity_for_short_input(data: tuple[list[float], list[float]], width: int):
    xs, ys = data
    dx, dy = downsample(xs, ys, width)
    assert (dx, dy) == (xs, ys)
    assert dx is not xs and dy is not ys  # fresh lists, safe to mutate


def test_downsample_drops_missing_values_first():
    xs = [0.0, 1.0, 2.0, 3.0, 4.0]
    ys = [1.0, None, math.nan, math.inf, 2.0]
    assert downsample(xs, ys, 10) == ([0.0, 4.0], [1.0, 2.0])


def test_downsample_keeps_a_spike():
    n = 100_000
    xs = list(range(n))
    ys = [0.0] * n
    ys[54_321] = 9.0
    ys[77_777] = -3.0
    dx, dy = downsample(xs, ys, 80)
    assert len(dx) <= 162
    assert (54_321, 9.0) in zip(dx, dy, strict=True)
    assert (77_777, -3.0) in zip(dx, dy, strict=True)
    # 100 000 points take a few ms (well under 50 ms); timing lives in `caat bench`.


def test_downsample_edge_cases():
    assert downsample([], [], 10) == ([], [])
    assert downsample([1.0], [None], 10) == ([], [])
    assert len(downsample(list(range(100)), [float(i) for i in range(100)], 0)[0]) <= 4
    with pytest.raises(ValueError):
        downsample([1.0, 2.0], [1.0], 10)


@given(st.lists(finite, max_size=200), st.floats(min_value=0.01, max_value=1.0))
def test_ema_stays_within_running_range(ys: list[float], alpha: float):
    out = ema(ys, alpha)
    assert len(out) == len(ys)
    for i, s in enumerate(out):
        seen = ys[: i + 1]
        assert min(seen) - 1e-6 * (1 + abs(min(seen))) <= s
        assert s <= max(seen) + 1e-6 * (1 + abs(max(seen)))


@given(st.lists(st.one_of(st.none(), finite), max_size=200))
def test_ema_alpha_one_is_identity(ys: list[float | None]):
    out = ema(ys, 1.0)
    assert len(out) == len(ys)
    for y, s in zip(ys, out, strict=True):
        assert math.isnan(s) if y is None else s == y


@given(finite, st.integers(min_value=1, max_value=50), st.floats(min_value=0.01, max_value=1.0))
def test_ema_of_constant_is_constant(value: float, n: int, alpha: float):
    assert ema([value] * n, alpha) == pytest.approx([value] * n)


def test_ema_skips_none_without_moving():
    out = ema([1.0, None, 3.0], 0.5)
    assert out[0] == 1.0
    assert math.isnan(out[1])
    assert out[2] == 2.0  # 0.5 * 3 + 0.5 * 1: the None did not pull it
    assert math.isnan(ema([None, math.nan], 0.3)[0])
    with pytest.raises(ValueError):
        ema([1.0], 0.0)
    with pytest.raises(ValueError):
        ema([1.0], 1.5)


@given(
    st.floats(min_value=-30, max_value=30, allow_nan=False),
    st.floats(min_value=0, max_value=40, allow_nan=False),
)
def test_log10_ticks_cover_the_range(lo: float, span: float):
    hi = lo + span
    ticks, labels = log10_ticks(lo, hi)
    assert len(ticks) == len(labels) >= 2
    assert ticks == sorted(ticks)
    assert ticks[0] <= lo + 1e-9
    assert ticks[-1] >= hi - 1e-9
    assert len(ticks) <= 12
    assert len(set(labels)) == len(labels)
    # Each label names the value at its position.
    for t, label in zip(ticks, labels, strict=True):
        assert math.log10(float(label)) == pytest.approx(t, abs=1e-9)


def test_log10_ticks_labels():
    assert log10_ticks(-3, 1) == (
        [-3.0, -2.0, -1.0, 0.0, 1.0],
        ["1e-3", "0.01", "0.1", "1", "10"],
    )
    assert log10_ticks(1, -3)[1] == ["1e-3", "0.01", "0.1", "1", "10"]
    _, labels = log10_ticks(math.log10(0.3), math.log10(0.6))
    assert labels == ["0.3", "0.4", "0.5", "0.6"]
    assert log10_ticks(math.nan, 1.0) == ([], [])


def test_eta_seconds():
    assert eta_seconds(0, 100, 5.0) is None
    assert eta_seconds(10, 0, 5.0) is None
    assert eta_seconds(10, 100, -1.0) is None
    assert eta_seconds(25, 100, 10.0) == pytest.approx(30.0)
    assert eta_seconds(100, 100, 10.0) == 0.0
    assert eta_seconds(120, 100, 10.0) == 0.0
