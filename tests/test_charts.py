"""MetricChart draws anything the monitor feeds it, cut down to its width first."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot

import caat_screens.charts as charts
from caat_screens.charts import WAITING_TEXT, MetricChart

N = 100_000


class ChartApp(App[None]):
    def compose(self) -> ComposeResult:
        yield MetricChart("φ", "cos(g_c, g_a)", id="chart")


def run_in_app(
    check: Callable[[ChartApp, MetricChart, Pilot[None]], Awaitable[None]],
    size: tuple[int, int] = (80, 24),
) -> None:
    """Run ``check`` against a MetricChart mounted in a headless app (80×24 by default)."""

    async def main() -> None:
        app = ChartApp()
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await check(app, app.query_one(MetricChart), pilot)

    asyncio.run(main())


def plain(chart: MetricChart) -> str:
    """What the chart shows, as text without colours."""
    rendered = chart.render()
    assert chart.last_error is None, chart.last_error
    return getattr(rendered, "plain", str(rendered))


def big_series() -> tuple[list[float], list[float]]:
    return [float(i) for i in range(N)], [math.sin(i / 3000) for i in range(N)]


def test_renders_big_small_and_empty_data():
    async def check(app: ChartApp, chart: MetricChart, pilot: Pilot[None]) -> None:
        assert chart.last_error is None
        assert WAITING_TEXT in plain(chart)

        chart.set_series({"clean": big_series()}, hlines={"γ": 0.8})
        await pilot.pause()
        assert chart.last_error is None
        text = plain(chart)
        assert "clean" in text and "γ = 0.8" in text and "φ" in text

        chart.set_series({"adv": ([float(i) for i in range(10)], [0.1 * i for i in range(10)])})
        await pilot.pause()
        assert "adv" in plain(chart)

        chart.set_series({})
        await pilot.pause()
        assert chart.last_error is None
        assert WAITING_TEXT in plain(chart)

    run_in_app(check)


def test_big_series_is_downsampled_to_the_width(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[int, int, int]] = []
    real = charts.downsample

    def spy(xs: Any, ys: Any, width: int) -> tuple[list[float], list[float]]:
        out = real(xs, ys, width)
        calls.append((len(xs), width, len(out[0])))
        return out

    monkeypatch.setattr(charts, "downsample", spy)

    async def check(app: ChartApp, chart: MetricChart, pilot: Pilot[None]) -> None:
        plotted: list[int] = []
        real_plot = chart.plt.plot

        def record_plot(*args: Any, **kwargs: Any) -> None:
            plotted.append(len(args[0]))
            real_plot(*args, **kwargs)

        monkeypatch.setattr(chart.plt, "plot", record_plot)
        chart.set_series({"clean": big_series()})
        await pilot.pause()
        assert chart.last_error is None
        width = chart.size.width
        assert 0 < width <= 80
        assert (N, width) in [(n, w) for n, w, _ in calls]
        assert all(kept <= 2 * w + 2 for n, w, kept in calls if n == N)
        assert plotted and max(plotted) <= 2 * width + 2

    run_in_app(check)


def test_log_scale_smoothing_and_x_label():
    async def check(app: ChartApp, chart: MetricChart, pilot: Pilot[None]) -> None:
        xs = [float(i) for i in range(N)]
        loss = [2.0 * math.exp(-i / 20_000) + 1e-3 for i in range(N)]
        loss[10] = 0.0  # not drawable on a log axis: skipped, not a crash
        loss[11] = None  # type: ignore[call-overload]
        chart.set_series(
            {"loss": (xs, loss)}, log_y=True, smooth=0.05, x_label="epoch", hlines={"target": 0.1}
        )
        await pilot.pause()
        text = plain(chart)
        assert "epoch" in text
        assert "0.1" in text and "1" in text  # decade labels, not raw log10 values

        # Back to linear: no leftover log ticks or limits.
        chart.set_series({"loss": (xs, loss)})
        await pilot.pause()
        assert "epoch" not in plain(chart)

        # Only non-positive values on a log axis: nothing to draw yet.
        chart.set_series({"mu": ([0.0, 1.0], [0.0, -1.0])}, log_y=True)
        await pilot.pause()
        assert WAITING_TEXT in plain(chart)

        with pytest.raises(ValueError):
            chart.set_series({}, smooth=0.0)

    run_in_app(check)


def test_follows_light_and_dark_themes_and_resizes():
    async def check(app: ChartApp, chart: MetricChart, pilot: Pilot[None]) -> None:
        chart.set_series({"clean": big_series(), "adv": big_series()}, hlines={"γ": 0.8})
        for theme in ("textual-light", "textual-dark"):
            app.theme = theme
            await pilot.pause()
            assert chart.last_error is None
        await pilot.resize_terminal(40, 12)
        await pilot.pause()
        assert chart.last_error is None
        assert chart.size.width <= 40
        await pilot.resize_terminal(200, 60)
        await pilot.pause()
        assert chart.last_error is None

    run_in_app(check)


def test_charts_do_not_import_torch():
    code = "import sys, caat_screens.charts; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("height", [8, 11, 12, 24])
def test_a_short_chart_carries_its_legend_in_the_title_line(height: int) -> None:
    series = {
        "clean": ([0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.5]),
        "adversarial": ([0.0, 1.0, 2.0, 3.0], [3.5, 3.0, 2.5, 2.0]),
    }

    async def check(app: ChartApp, chart: MetricChart, pilot: Pilot[None]) -> None:
        chart.set_series(series, hlines={"γ": 0.8})
        await pilot.pause()
        title, *body = plain(chart).splitlines()
        entries = ["clean", "adversarial", "γ = 0.8"]
        if height < charts.ROOMY_HEIGHT:
            assert title.strip() == "φ · ■ clean  ■ adversarial  ■ γ = 0.8"
            assert not any(e in line for line in body for e in entries)  # the data stays clear
        else:
            assert title.strip() == "φ"
            assert all(any(e in line for line in body) for e in entries)  # plotext's legend

    run_in_app(check, size=(80, height))


def test_a_legend_too_long_for_the_title_line_keeps_the_legend_and_cuts_it() -> None:
    names = ["train SA", "train AA", "val SA", "val AA", "test SA", "test AA"]
    series = {n: ([0.0, 1.0], [float(i), float(i + 1)]) for i, n in enumerate(names)}

    async def check(app: ChartApp, chart: MetricChart, pilot: Pilot[None]) -> None:
        chart.set_series(series)
        await pilot.pause()
        title = plain(chart).splitlines()[0]
        assert len(title) == 40 and title.startswith("■ train SA") and title.endswith("…")

    run_in_app(check, size=(40, 9))
