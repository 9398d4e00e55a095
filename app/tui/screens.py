"""Modal screens: the help text and the method picker."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widgets import Button, Checkbox, Footer, Label, Markdown, SelectionList
from textual.widgets.option_list import OptionDoesNotExist

HELP = """\
# sml-sim replay

(Scroll with the arrow keys, page up/down or the mouse; `q`, `esc` or `?` closes.)

The replay clock advances one period at a time. Each **step** writes the next period into the
store, retrains every method on the current period and scores it on the next one (each case's item
is ranked against up to 999 sampled negatives, fewer when the catalogue is smaller, and among all
items). Periods are numbered from 0, as in the store and the CSV export.

| key | what it does |
|---|---|
| `space` / `n` | step one period (disabled while a step runs); after a method is resumed, catch it up first |
| `a` | autoplay on/off: steps until the last period, stops on an error or a failed method; `a` again pauses it (and stops a run to test or a catch-up) |
| `t` | run to the first test period |
| `r` | the chart's metric (and the log's): Recall / NDCG; the table shows both |
| `k` | K = 5, 10, 20 (chart and table) |
| `f` | sampled ranking (up to 999 negatives per case) / full ranking (chart and table) |
| `c` | on a narrow terminal: metric chart / timing chart |
| `e` | export the run's results as CSV, `<store name>-run-<id>.csv` in the current folder (another file is never replaced: `-2`, `-3`... are added; e again rewrites this session's file; the path is shown) |
| `m` | pick the methods trained and shown (an unchecked one is paused) |
| `?` | this help |
| `q` / `ctrl+c` | quit: cancels the running step; every committed period is kept |

**Header**: dataset and source (synthetic data is flagged), device, the period the clock is at (the
last one scored; while a step runs, the one being scored) and its split (pretrain / train /
validation / test), the run id.

**Metric chart**: the chosen metric per method per scored period; vertical rules mark where the
validation and test periods begin. Points marked `x` ("in-sample") were scored on data the method's
meta step had seen during training periods: they are never averaged.

**Timing chart**: seconds spent retraining each method per period.

**Table**: per method, the last scored period (`*` = in-sample) and its metrics, the running mean over
the test periods so far, **RI** = the relative improvement of SML (without `sml`, of the best SML
configuration, else of the best method, by validation Recall@20, as in `sml-sim runs`) over that method, in percent, over the test periods both have scored
(while a resumed method catches up, these are fewer than the test means shown cover; `-` where the
other method scores 0), and the last retraining time (`fit`). It shows Recall and NDCG both, at the
chosen K and ranking. On a wide terminal, `tests` counts the test periods in the method's mean and
`status` is `ok` or the method's failure. A failed method is marked `x` with its reason under the table and
in the log; the others go on.

**Methods** (`m`) picks the methods trained and shown: an unchecked method is paused (hidden and
not retrained) while the others go on. Checked again, it has to catch up before the clock moves on:
the next `n` retrains it alone on each period it missed, in order, each scored on the next period as
usual (the others' results stay as they are); the status line says which periods. After that, `n`
steps every method again.

Resume: reopening the same replay reopens its last run: an unfinished one continues, a finished one
is shown as it ended (`--run ID` picks one, `--new` starts afresh; the header and the log say when a
new run repeats the settings of a finished one).
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 90%;
        max-width: 100;
        height: 90%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    """
    # Its own footer: the main screen's (behind this one) offers `q quit`, but here q closes.
    BINDINGS = [
        Binding("q", "close", "close", key_display="q/esc/?"),
        Binding("escape,question_mark", "close", "close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
        yield Footer(compact=True)

    def action_close(self) -> None:
        self.dismiss(None)


class MethodList(SelectionList[str]):
    """A SelectionList whose boxes read without colour: `X` when checked, blank when not (Textual
    draws the X in both states and tells them apart by colour only)."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        if len(segments) < 2 or segments[1].text != Checkbox.BUTTON_INNER:
            return strip
        try:
            value = self.get_option_at_index(self.scroll_offset.y + y).value
        except OptionDoesNotExist:  # past the last option
            return strip
        if value in self.selected:
            return strip
        inner = segments[1]
        segments[1] = inner._replace(text=" " * len(inner.text))
        return Strip(segments, strip.cell_length)


class MethodsScreen(ModalScreen[set[str] | None]):
    """Check the methods to show; returns the visible set, or None when cancelled."""

    DEFAULT_CSS = """
    MethodsScreen {
        align: center middle;
    }
    MethodsScreen > Vertical {
        width: 60;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    MethodsScreen SelectionList {
        height: auto;
        max-height: 14;
    }
    MethodsScreen Label {
        width: 1fr;
        color: $text-muted;
    }
    MethodsScreen Horizontal {
        height: auto;
        align-horizontal: right;
    }
    MethodsScreen Button {
        margin-left: 1;
        min-width: 10;
    }
    """
    BINDINGS = [
        Binding("escape", "cancel", "cancel"),
        Binding("enter", "apply", "apply", priority=True),
    ]

    def __init__(self, methods: list[str], hidden: set[str]) -> None:
        super().__init__()
        self.methods = methods
        self.hidden = set(hidden)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Methods trained and shown")
            yield MethodList(*[(m, m, m not in self.hidden) for m in self.methods], id="methods")
            yield Label("space toggles, enter applies, escape cancels. Unchecked methods pause; checked again, "
                        "the next n retrains them on the periods they missed, then the clock moves on.")
            with Horizontal():
                yield Button("Apply", variant="primary", id="apply")
                yield Button("Cancel", id="cancel")
        yield Footer(compact=True)  # its own keys, not the main screen's (q does nothing here)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self.action_apply()
        else:
            self.action_cancel()

    def action_apply(self) -> None:
        self.dismiss(set(self.query_one(SelectionList).selected))

    def action_cancel(self) -> None:
        self.dismiss(None)
