"""The widgets of the replay screen: header, period charts, results table, log, activity line."""

from __future__ import annotations

import math
import re
from collections import deque
from functools import lru_cache

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.strip import Strip
from textual.timer import Timer
from textual.widgets import DataTable, ProgressBar, RichLog, Static
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from app.tui.messages import RunView
from app.tui.model import SPLIT_STYLE, MetricChoice, Series, Table


class ReplayHeader(Static):
    """Dataset and source (synthetic flagged), device, the replay clock and its split, run id."""

    _lines = 0

    DEFAULT_CSS = """
    ReplayHeader {
        height: auto;
        max-height: 2;
        padding: 0 1;
        background: $panel;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def show(self, view: RunView | None, clock: int | None, status: str = "") -> None:
        text = self._text(view, clock, status)
        if text == self.content:
            return
        # Relayout only when the header's line count changes. Lines are cut, never wrapped: a long
        # source path wrapped onto a third line pushed the table's last rows off a small terminal.
        lines = text.plain.count("\n") + 1
        self.update(text, layout=lines != self._lines)
        self._lines = lines

    def _text(self, view: RunView | None, clock: int | None, status: str) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("sml-sim replay", style="bold")
        if view is None:
            text.append(f"  {status or 'opening...'}", style="italic")
            return text
        text.append("  ")
        text.append(view.dataset, style="bold")
        text.append(" ")
        if view.synthetic:
            text.append(" SYNTHETIC DATA ", style="bold black on yellow")
        else:
            text.append(" real data ", style="bold black on green")
        text.append("  device ")
        text.append(view.device, style="bold")
        text.append("  run ")
        text.append(str(view.run_id), style="bold")
        if view.repeats_finished is not None:
            text.append(f" (new; run {view.repeats_finished} is finished)", style="bold yellow")
        text.append("\n")
        last = view.n_periods - 1
        if clock is None:
            text.append(f"period -/{last}", style="bold")
        else:
            split = view.split_of(clock)
            text.append(f"period {clock}/{last} ", style="bold")
            text.append(f" {split} ", style=f"bold black on {SPLIT_STYLE.get(split, 'white')}")
        if status:
            text.append(f"  {status}", style="italic")
        text.append("  source: ", style="dim")
        text.append(view.source)
        return text


class PeriodChart(PlotextPlot):
    """A per-period, per-method line chart; ``series`` holds exactly what is drawn.

    The train / validation / test regions are drawn as labelled vertical rules over the whole
    replay range, so they are visible before any result arrives. In-sample points (SML scored on
    data its meta step saw) are drawn apart, as ``x`` markers with their own legend entry. The title
    and the legend sit in the top border (plotext's own legend would hide the first points).

    Building a plotext figure and turning its ANSI text into lines costs tens of milliseconds at
    large sizes, so ``replot()`` does it in a thread worker on a private figure and the finished
    lines come back in a ``Built`` message; the widget draws the last finished lines meanwhile.
    Requests that arrive while a build runs are merged into one rebuild.
    """

    DEFAULT_CSS = """
    PeriodChart {
        min-height: 6;
        min-width: 30;
        border-top: solid $panel-lighten-2;
        border-title-align: left;
        border-title-color: $text;
    }
    """

    class Built(Message):
        def __init__(self, generation: int, strips: list[Strip]) -> None:
            super().__init__()
            self.generation = generation
            self.strips = strips

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.chart_title = title
        self.series = Series()
        self.method_colors: dict[str, tuple[int, str]] = {}
        self.run_view: RunView | None = None
        self._strips: list[Strip] = []
        self._generation = 0  # of the latest request
        self._drawn = 0  # generation of the lines on screen
        self._building = False
        self._pending = False
        self._scheduled = False

    @property
    def up_to_date(self) -> bool:
        """True when the lines on screen show the latest data (no build running or pending)."""
        return not (self._building or self._pending or self._scheduled) and self._drawn == self._generation

    def set_data(self, series: Series, *, title: str | None = None, view: RunView | None = None,
                 colors: dict[str, tuple[int, str]] | None = None) -> None:
        changed = series != self.series
        self.series = series
        for attr, value in (("chart_title", title), ("run_view", view), ("method_colors", colors)):
            if value is not None and value != getattr(self, attr):
                setattr(self, attr, value)
                changed = True
        if changed or not self._strips:
            self.replot()

    def on_resize(self) -> None:
        self.replot()

    def replot(self) -> None:
        """Draw the current series: the legend now, the plot as soon as it is built."""
        self.border_title = self.legend()
        self._generation += 1
        if self._building:
            self._pending = True
            return
        if not self._scheduled:
            # Start after the next screen update: the legend, the table and whatever else the key
            # changed reach the screen first, without the build competing for the interpreter.
            self._scheduled = True
            self.call_after_refresh(self._start_scheduled)

    def _start_scheduled(self) -> None:
        self._scheduled = False
        if not self._building:
            self._start_build()

    def _start_build(self) -> None:
        width, height = self.size.width, self.size.height
        if width <= 0 or height <= 0 or not self.is_mounted:
            self._drawn = self._generation
            return
        self._building = True
        spec = (self._generation, width, height, self.series, self.run_view, dict(self.method_colors),
                self._get_plotext_theme_name(self.app.theme))
        self.run_worker(lambda: self._build(*spec), thread=True, group=f"chart-{self.id}", exit_on_error=False,
                        name=f"plot {self.id}")

    def _build(self, generation, width, height, series, view, colors, theme) -> None:
        """Worker thread: a private figure, built and cut into lines."""
        plt = Plot()
        plt.theme(theme)  # first: labels take the canvas colour as their background
        plt.plotsize(width, height)
        plt._set_size(width, height)
        values = [v for pts in (*series.points.values(), *series.in_sample.values()) for _, v in pts]
        top = max(values, default=0.0)
        top = top * 1.15 if top > 0 else 1.0
        plt.ylim(0, top)
        plt.yticks(*y_ticks(top, max(2, (height - 4) // 3)))  # 2+ steps: a short chart still reads
        if view is not None:
            _regions(plt, view, width, top)
        for method, pts in series.points.items():
            if pts:
                xs, ys = zip(*pts)
                plt.plot(list(xs), list(ys), color=colors.get(method, (15, ""))[0])
        for method, pts in series.in_sample.items():
            if pts:
                xs, ys = zip(*pts)
                plt.scatter(list(xs), list(ys), color=colors.get(method, (15, ""))[0], marker="x")
        strips = ansi_to_strips(plt.build(), width, height)
        self.post_message(self.Built(generation, strips))

    def on_period_chart_built(self, message: PeriodChart.Built) -> None:
        message.stop()
        self._building = False
        if message.generation >= self._drawn:
            self._strips = message.strips
            self._drawn = message.generation
            self.refresh()
        if self._pending:
            self._pending = False
            self._start_build()

    def on_worker_state_changed(self, event) -> None:
        from textual.worker import WorkerState

        event.stop()
        if event.state == WorkerState.ERROR:  # never leave the chart waiting on a failed build
            self._building = False
            self.log.error(f"chart build failed: {event.worker.error!r}")
            if self._pending:
                self._pending = False
                self._start_build()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y < len(self._strips):
            strip = self._strips[y]
            return strip if strip.cell_length == width else strip.crop_extend(0, width, None)
        return Strip.blank(width)

    def legend(self, compact: bool = False) -> Text:
        """The title and a line mark per method in its colour; ``compact`` (chosen when the border is
        too narrow for the marks) colours the names themselves instead."""
        text = Text(self.chart_title, style="bold")
        text.append("  ")
        for method in self.series.points:
            color = self.method_colors.get(method, (15, "white"))[1]
            if compact:
                text.append(method, style=f"bold {color}")
                text.append(" ")
            else:
                text.append("━ ", style=color)
                text.append(f"{method} ")
        if any(self.series.in_sample.values()):
            text.append("x", style="bold")
            text.append(" in-sample")
        if not compact and self.size.width and text.cell_len > self.size.width - 4:  # the border's corners
            return self.legend(compact=True)
        return text


_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _color(params: list[str], i: int) -> tuple[Color | None, int]:
    """The colour of an SGR 38/48 sequence starting at params[i] (5;n or 2;r;g;b); returns the next index."""
    if i + 1 < len(params) and params[i + 1] == "5" and i + 2 < len(params):
        return Color.from_ansi(int(params[i + 2])), i + 3
    if i + 1 < len(params) and params[i + 1] == "2" and i + 4 < len(params):
        return Color.from_rgb(int(params[i + 2]), int(params[i + 3]), int(params[i + 4])), i + 5
    return None, i + 1


def ansi_to_strips(text: str, width: int, height: int) -> list[Strip]:
    """Plotext's output (SGR colour codes only) as Textual strips, without a general ANSI decoder.

    Rich's decoder plus Textual's content pipeline cost ~100 ms for a 120x40 chart; this is ~10x less.
    """
    strips = []
    for line in text.split("\n")[:height]:
        segments = []
        fg = bg = None
        bold = False
        pos = 0
        for m in _SGR.finditer(line):
            start = m.start()
            if start > pos:
                segments.append(Segment(line[pos:start], _style(fg, bg, bold)))
            pos = m.end()
            reset, new_fg, new_bg, new_bold = _sgr(m.group(1))
            if reset:
                fg = bg = None
                bold = False
            if new_fg is not None:
                fg = new_fg
            if new_bg is not None:
                bg = new_bg
            bold = bold or new_bold
        if pos < len(line):
            segments.append(Segment(line[pos:], _style(fg, bg, bold)))
        strip = Strip(segments)
        strips.append(strip if strip.cell_length == width else strip.crop_extend(0, width, None))
    return strips


@lru_cache(maxsize=256)
def _sgr(code: str) -> tuple[bool, Color | None, Color | None, bool]:
    """(reset, foreground, background, bold) set by one SGR sequence's parameters."""
    params = code.split(";") if code else ["0"]
    reset, fg, bg, bold = False, None, None, False
    i = 0
    while i < len(params):
        p = params[i]
        if p in ("0", ""):
            reset, fg, bg, bold = True, None, None, False
            i += 1
        elif p == "1":
            bold, i = True, i + 1
        elif p == "38":
            fg, i = _color(params, i)
        elif p == "48":
            bg, i = _color(params, i)
        else:  # 39/49 (default colours) and anything else: leave as is
            i += 1
    return reset, fg, bg, bold


@lru_cache(maxsize=1024)
def _style(fg: Color | None, bg: Color | None, bold: bool) -> Style:
    return Style(color=fg, bgcolor=bg, bold=bold or None)


def _regions(plt: Plot, view: RunView, width: int, top: float) -> None:
    """Fix the x range to the whole replay and mark where the train, validation and test periods lie."""
    lo, hi = view.first_scored, view.n_periods - 1
    plt.xlim(lo - 0.5, hi + 0.5)
    every = max(1, -(-(hi - lo + 1) * 4 // max(width - 10, 10)))  # tick labels about four cells apart
    plt.xticks(list(range(lo, hi + 1, every)))
    regions = [("train", lo, int(view.split["train"][1]), 12)]  # plotext colours: 256-colour numbers
    v0, v1 = (int(x) for x in view.split["validation"])
    if v1 >= v0:
        regions.append(("val", v0, v1, 11))
    regions.append(("test", int(view.split["test"][0]), hi, 13))
    for name, a, b, color in regions:
        a = max(a, lo)
        if b < a:
            continue
        if a > lo:
            plt.vline(a - 0.5, color)
        plt.text(name, (a + b) / 2, top * 0.97, color=color, alignment="center")


def y_ticks(top: float, count: int) -> tuple[list[float], list[str]]:
    """``count`` to 2.5 x ``count`` ticks from 0 to ``top`` at round steps (1, 2 or 5 times a power of ten), with
    just enough decimals that no two labels read the same (plotext's own repeat on small ranges)."""
    raw = top / max(1, count)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (5, 2, 1) if m * power <= raw * (1 + 1e-9))  # rounded down: >= count ticks
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    ticks = [k * step for k in range(int(top / step + 1e-9) + 1)]
    return ticks, [f"{t:.{decimals}f}" for t in ticks]


BASE_COLUMNS = 9  # the results table's columns before the wide layout's "tests" and "status"


class ResultsTable(DataTable):
    """Per method: last period, test running mean, relative improvement, retrain seconds."""

    DEFAULT_CSS = """
    ResultsTable {
        height: auto;
    }
    """

    def __init__(self, **kwargs) -> None:
        # One space per column (widths + 1 below) instead of DataTable's two: nine columns then fit
        # 80 columns with the longer method names (gru4rec, caser), where "fit" used to be cut off.
        super().__init__(cursor_type="none", zebra_stripes=True, cell_padding=0, **kwargs)
        self.fixed_columns = 1  # the method names stay when a narrow terminal scrolls the table sideways
        self.shown: Table | None = None
        self._shape: tuple = ()
        self._cells: dict[tuple[str, str], tuple[str, str]] = {}

    def show(self, table: Table, choice: MetricChoice, colors: dict[str, tuple[int, str]], wide: bool) -> None:
        self.shown = table
        r, n = f"R@{choice.k}", f"N@{choice.k}"
        labels = ["method", "period", r, n, f"test {r}", f"test {n}", f"RI {r}", f"RI {n}", "fit"]
        if wide:
            labels += ["tests", "status"]
        rows = []
        for row in table.rows:
            color = colors.get(row.method, (15, "white"))[1]
            name = Text(("x " if row.failed else "") + row.method, style="bold red" if row.failed else f"bold {color}")
            cells = [
                name,
                Text(row.period, style="red" if row.failed else ""),
                *[Text(v, justify="right") for v in (row.last["recall"], row.last["ndcg"])],
                *[Text(v, justify="right") for v in (row.mean["recall"], row.mean["ndcg"])],
                *[Text(v, justify="right", style="dim" if v == "ref" else "") for v in (row.ri["recall"], row.ri["ndcg"])],
                Text(row.retrain, justify="right"),
            ]
            if wide:
                # a leading space: the column before it is right-aligned
                status = Text(f" failed: {row.error}", style="red") if row.failed else Text(" ok", style="green")
                cells += [Text(str(row.n_test), justify="right"), status]
            rows.append((row.method, cells))
        # Fixed column widths, computed here: the table's own measuring happens later, on idle, and
        # can leave a freshly rebuilt table drawn with header-only widths. Minimum widths keep them
        # stable from step to step, so most updates change cells in place (no relayout).
        minimum = {0: 6, 1: 6, 6: 7, 7: 7, 8: 6}
        widths = [1 + max([len(label), minimum.get(i, 0)] + [cells[i].cell_len for _, cells in rows])
                  for i, label in enumerate(labels)]
        if wide and 0 < self.size.width < sum(widths):  # the wide layout's extra columns do not fit here
            labels, widths = labels[:BASE_COLUMNS], widths[:BASE_COLUMNS]
            rows = [(key, cells[:BASE_COLUMNS]) for key, cells in rows]
        keys = [key for key, _ in rows]
        if (labels, widths, keys) == self._shape:
            for key, cells in rows:
                for label, cell in zip(labels, cells):
                    if self._cells.get((key, label)) != (cell.plain, str(cell.style)):
                        self.update_cell(key, label, cell)
        else:
            self.clear(columns=True)
            for i, (label, width) in enumerate(zip(labels, widths)):
                # numbers are right-aligned, and so are their headers (the space is then on the left)
                header = Text(" status" if label == "status" else label,
                              justify="left" if i < 2 or label == "status" else "right")
                self.add_column(header, key=label, width=width)
            for key, cells in rows:
                self.add_row(*cells, key=key)
            self._shape = (labels, widths, keys)
        self._cells = {(key, label): (cell.plain, str(cell.style))
                       for key, cells in rows for label, cell in zip(labels, cells)}

    def cell_text(self, method: str, column: str) -> str:
        """The plain text of one cell (for tests and the latency benchmark)."""
        value = self.get_cell(method, column)
        return value.plain if isinstance(value, Text) else str(value)


class LogPanel(RichLog):
    """The event log. Every write scrolls it to its newest line (RichLog's auto-scroll); a resize
    keeps it there too, unless the user had scrolled up. (RichLog alone keeps its old scroll offset
    when it shrinks, so a smaller window showed older lines, not the newest.)

    RichLog wraps a line once, at the width the log has when it is written: after a resize to
    another width, lines wrapped for the old one were cut (words lost). So ``add`` keeps what it
    writes, and a change of width writes it all again, wrapped anew."""

    DEFAULT_CSS = """
    LogPanel {
        scrollbar-gutter: stable;  /* the scrollbar appearing must not narrow lines already wrapped */
    }
    """

    _height_seen = 0
    _width_wrapped = 0
    REWRAP_DELAY = 0.15  # seconds: re-wrap once a resize has settled, not at every step of a drag

    class Resized(Message):
        """The log has a new size: the app fits its layout around it (its height depends on the
        terminal's width class, which is applied after the app's own resize)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._entries: deque[str] = deque(maxlen=self.max_lines)
        self._rewrap_timer: Timer | None = None

    def add(self, text: str) -> None:
        """Write one entry (Rich markup when the log has ``markup``), kept to be wrapped again."""
        self._entries.append(text)
        self.write(text)

    def on_resize(self) -> None:  # RichLog's own on_resize runs as well (Textual walks the MRO)
        height, width = self.scrollable_content_region.height, self.scrollable_content_region.width
        # At the end before this resize, measured with the height it had then (a growing log may
        # have been clamped to its new end already, which is the end too).
        was_at_end = not self._height_seen or self.scroll_y >= self.virtual_size.height - self._height_seen - 1
        self._height_seen = height
        if self._width_wrapped and width and width != self._width_wrapped and self._entries:
            # A thousand entries take ~0.2 s to wrap again.
            if self._rewrap_timer is not None:
                self._rewrap_timer.stop()
            self._rewrap_timer = self.set_timer(self.REWRAP_DELAY, self._rewrap)
        if width:
            self._width_wrapped = width
        self.post_message(self.Resized())
        if was_at_end:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True, x_axis=False)


    def _rewrap(self) -> None:
        self._rewrap_timer = None
        at_end = self.scroll_y >= self.max_scroll_y - 1
        scrolled_to = self.scroll_y
        self.clear()
        for text in self._entries:
            self.write(text, scroll_end=False)
        if at_end:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:  # about where the user had scrolled to
            self.scroll_to(y=scrolled_to, animate=False, immediate=True)


class ActivityBar(Horizontal):
    """What the worker is doing now, with the progress within the period."""

    DEFAULT_CSS = """
    ActivityBar {
        height: 1;
        background: $boost;
    }
    ActivityBar #activity-text {
        width: 1fr;
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    ActivityBar ProgressBar {
        width: 22;
        height: 1;
    }
    ActivityBar Bar {
        width: 14;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="activity-text")
        yield ProgressBar(total=100, show_eta=False, id="progress")

    def say(self, text: str | Text, fraction: float | None = None) -> None:
        label = self.query_one("#activity-text", Static)
        text = Text(text) if isinstance(text, str) else text  # plain text, never markup
        if text != label.content:
            label.update(text, layout=False)  # one fixed line: no relayout (this runs ~10 times a second)
        if fraction is not None:
            progress = round(100 * max(0.0, min(1.0, fraction)))
            bar = self.query_one(ProgressBar)
            if bar.progress != progress:
                bar.update(progress=progress)

    @property
    def text(self) -> str:
        content = self.query_one("#activity-text", Static).content
        return content.plain if isinstance(content, Text) else str(content)
