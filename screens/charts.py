"""Line charts for the monitor screen, drawn with textual-plotext.

Data arrives through ``MetricChart.set_series``; drawing happens in ``render``
because only there is the widget's real width known, and the series are cut
down to that width first (plotext needs ~2 s to build a 100 000-point line,
~3 ms for the ~160 points an 80-column chart can actually show).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from .series import downsample, ema, log10_ticks

__all__ = ["SERIES_COLORS", "MetricChart", "Series"]

Series = tuple[Sequence[float], Sequence[float | None]]
"""One named line: x values and y values of the same length."""

RGB = tuple[int, int, int]

SERIES_COLORS: tuple[RGB, ...] = (
    (0, 130, 200),  # blue
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (0, 128, 128),  # teal
    (170, 110, 40),  # brown
    (240, 50, 230),  # magenta
)
"""Mid-lightness RGB colours: legible on light and dark surfaces alike.

Given explicitly because plotext picks automatic colours from the theme that is
active when ``plot`` is called, and textual-plotext only applies the app's theme
after our drawing code has run; explicit colours also keep a series' colour
stable when others come and go.
"""

HLINE_COLOR: RGB = (128, 128, 128)
"""Reference lines (γ, targets) in neutral grey so they never look like data."""

WAITING_TEXT = "waiting for data"
ROOMY_HEIGHT = 12
"""Below this many rows a chart drops its axis-label line to keep a row for data."""


class MetricChart(PlotextPlot):
    """One titled line chart of one or more metric series, redrawn to fit its width."""

    DEFAULT_CSS = """
    MetricChart {
        width: 1fr;
        height: 1fr;
        min-height: 8;
    }
    """

    marker: str = "hd"
    """plotext marker for data lines. "hd" (half blocks) builds 1.5-3x faster than
    "braille" for noisy series, which matters with four charts on a large terminal."""

    def __init__(
        self,
        title: str,
        y_label: str = "",
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.title = title
        self.y_label = y_label
        self._series: dict[str, Series] = {}
        self._hlines: dict[str, float] = {}
        self._x_label = "step"
        self._log_y = False
        self._smooth: float | None = None
        # (width, prepared lines) so that redraws for focus/theme changes do not
        # downsample again; cleared by set_series.
        self._prepared: tuple[int, dict[str, tuple[list[float], list[float]]]] | None = None
        self.last_error: Exception | None = None
        """The exception of the last failed build, shown in place of the plot; None if fine."""
        self._legend: list[tuple[str, RGB]] = []
        """A short chart's legend, drawn in its title line: (label, colour) per line."""

    def set_series(
        self,
        series: Mapping[str, Series],
        *,
        hlines: Mapping[str, float] | None = None,
        x_label: str = "step",
        log_y: bool = False,
        smooth: float | None = None,
    ) -> None:
        """Replace what the chart shows and schedule a redraw.

        The sequences are kept by reference, not copied, so pass fresh lists
        (or call again) when the data changes. ``smooth`` is the EMA ``alpha``
        in (0, 1] (smaller is smoother; None or 1 is off). ``log_y`` plots
        log10 of the positive values with decade labels, never plotext's own
        log scale (which raises on redraw).
        """
        if smooth is not None and not 0.0 < smooth <= 1.0:
            raise ValueError(f"smooth must be in (0, 1] or None, got {smooth}")
        self._series = dict(series)
        self._hlines = dict(hlines or {})
        self._x_label = x_label
        self._log_y = log_y
        self._smooth = None if smooth == 1.0 else smooth
        self._prepared = None
        self.refresh()

    def _prepare(self, width: int) -> dict[str, tuple[list[float], list[float]]]:
        """Smooth, downsample to ``width`` and (for log_y) take log10 of every series.

        Smoothing runs on the full series, before downsampling: an EMA over
        min/max bucket extremes would depend on the width and mean nothing.
        log10 runs after downsampling, on a few hundred points, since it is
        monotonic and keeps each bucket's min and max.
        """
        if self._prepared is not None and self._prepared[0] == width:
            return self._prepared[1]
        lines: dict[str, tuple[list[float], list[float]]] = {}
        for label, (xs, ys) in self._series.items():
            if self._smooth is not None:
                ys = ema(ys, self._smooth)
            dx, dy = downsample(xs, ys, width)
            if self._log_y:
                pairs = [(x, math.log10(y)) for x, y in zip(dx, dy, strict=True) if y > 0]
                dx = [x for x, _ in pairs]
                dy = [y for _, y in pairs]
            if dx:
                lines[label] = (dx, dy)
        self._prepared = (width, lines)
        return lines

    def _replot(self) -> None:
        """Draw the current data into ``self.plt`` at the widget's current size."""
        plt = self.plt
        plt.clear_figure()  # also drops yticks/ylim from a previous log plot
        plt.title(self.title)
        roomy = self.size.height >= ROOMY_HEIGHT
        if roomy:  # else the title and the x ticks say enough
            plt.xlabel(self._x_label)
            plt.ylabel(self.y_label)
        self._legend = []
        lines = self._prepare(self.size.width)
        if not lines:
            plt.xlim(0.0, 1.0)
            plt.ylim(0.0, 1.0)
            plt.xticks([], [])
            plt.yticks([], [])
            plt.text(WAITING_TEXT, 0.5, 0.5, alignment="center")
            return

        # A short chart has no rows to spare for plotext's legend (it covers the data, or
        # plotext drops it): its legend goes into the title line instead.
        def line(xs: Sequence[float], ys: Sequence[float], label: str, color: RGB) -> None:
            if roomy:
                plt.plot(xs, ys, label=label, color=color, marker=self.marker)
            else:
                plt.plot(xs, ys, color=color, marker=self.marker)
                self._legend.append((label, color))

        for i, (label, (xs, ys)) in enumerate(lines.items()):
            line(xs, ys, label, SERIES_COLORS[i % len(SERIES_COLORS)])

        # Reference lines as two-point series, not plt.hline: that way they get a
        # legend entry and pull the y range in, so γ = 0.8 shows even while φ
        # stays near 0.
        x_lo = min(xs[0] for xs, _ in lines.values())
        x_hi = max(xs[-1] for xs, _ in lines.values())
        y_values = [y for _, ys in lines.values() for y in (min(ys), max(ys))]
        for label, value in self._hlines.items():
            if self._log_y:
                if not value > 0:
                    continue
                y = math.log10(value)
            else:
                y = float(value)
            if not math.isfinite(y):
                continue
            y_values.append(y)
            line([x_lo, x_hi], [y, y], f"{label} = {value:g}", HLINE_COLOR)

        if self._log_y:
            ticks, labels = log10_ticks(min(y_values), max(y_values))
            plt.ylim(ticks[0], ticks[-1])
            plt.yticks(ticks, labels)

    def render(self) -> RenderResult:
        """Redraw from the stored series at the current size, then let plotext build.

        ``PlotextPlot.render`` sets the plot size and theme and builds; it runs on
        every refresh and resize, so this is where the width is known. A build
        error (a plotext bug on odd data) is shown as text instead of taking the
        dashboard down.
        """
        try:
            self._replot()
            result = super().render()
        except Exception as error:
            self.last_error = error
            self.log.error(f"{type(error).__name__} while drawing {self.title!r}: {error}")
            return Text(f"{self.title}: cannot draw ({type(error).__name__}: {error})")
        self.last_error = None
        if self._legend and isinstance(result, Text):
            rows = result.split("\n", allow_blank=True)
            rows[0] = self._title_legend(self.size.width)
            result = Text("\n").join(rows)
        return result

    def _title_legend(self, width: int) -> Text:
        """The title line of a short chart: title and legend, or the legend alone if the
        two do not fit, cut with an ellipsis if even that does not."""
        legend = Text()
        for label, color in self._legend:
            legend.append("  ■ ", style=f"rgb({color[0]},{color[1]},{color[2]})")
            legend.append(label)
        legend = legend[2:]  # no gap before the first entry
        title = Text(self.title)
        if len(title) + 3 + len(legend) <= width:
            legend = Text.assemble(title, " · ", legend)
        legend.truncate(width, overflow="ellipsis")
        legend.align("center", width)
        return legend
