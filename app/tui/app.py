"""The live replay app: `sml-sim replay DATASET_OR_SCENARIO`.

Concurrency (see the design notes): loading the dataset, pre-training and every period step run in
named thread workers of the group ``replay``, one at a time; stepping is disabled while one runs.
The engine reports on the worker thread through its listener interface; ``_Forwarder`` turns each
event into a typed message (progress throttled to about ten per second) and posts it. Only the
message handlers below touch widgets. Quitting sets the replay's cancel event: the engine raises
``Cancelled`` at its next batch, nothing of the running step is committed, every committed period
stays, and the app exits.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from app.tui import model
from app.tui.messages import (
    LoadProgress,
    MethodScored,
    MethodStarted,
    PeriodArrived,
    ReplayLoaded,
    ReplayPrepared,
    RunView,
    StepDone,
    StepProgress,
)
from app.tui.model import MetricChoice
from app.tui.screens import HelpScreen, MethodsScreen
from app.tui.widgets import ActivityBar, LogPanel, PeriodChart, ReplayHeader, ResultsTable
from db.store import db_option

WIDE = 120  # columns from which both charts and the table's status column are shown
MIN_CHART_ROWS = 7  # rows under which a chart shows no readable line: it is hidden instead
SWITCH_INTERVAL = 0.001  # seconds; see run_replay_app
CHART_EVERY = 2.0  # seconds between chart redraws while results stream in (see schedule_refresh)
BUSY_TOAST = 2.0  # seconds the "a step is running" toast stays; no second one meanwhile

CSS = """
Screen {
    layout: vertical;
}
#charts {
    height: 1fr;
}
/* Set by fit_layout: too little height is left for a readable chart. */
Screen.-no-charts #charts {
    display: none;
}
#metric-chart {
    width: 3fr;
}
#timing-chart {
    width: 2fr;
}
#bottom {
    height: auto;
}
#table-box {
    width: 3fr;
    height: auto;
}
#table-title {
    height: 1;
    padding: 0 1;
    color: $text-muted;
    text-wrap: nowrap;
    text-overflow: ellipsis;
}
#failures {
    height: auto;
    max-height: 3;
    padding: 0 1;
    color: $error;
    display: none;
}
#failures.-shown {
    display: block;
}
#log {
    width: 2fr;
    height: 12;
    border-left: vkey $panel-lighten-2;
    padding: 0 1;
    scrollbar-size-vertical: 1;
    overflow-x: hidden;
}
Screen.-narrow #timing-chart {
    display: none;
}
Screen.-narrow.-timing #timing-chart {
    display: block;
}
Screen.-narrow.-timing #metric-chart {
    display: none;
}
Screen.-narrow #bottom {
    layout: vertical;
}
Screen.-narrow #table-box {
    width: 1fr;
}
Screen.-narrow #log {
    width: 1fr;
    height: 4;
    border-left: none;
    border-top: hkey $panel-lighten-2;
    padding: 0 1;
}
Screen.-narrow.-short #log, Screen.-narrow.-tiny #log {
    height: 3;
}
"""

# Actions that only make sense on the main screen (not behind a modal).
MAIN_ACTIONS = {"step", "autoplay", "to_test", "cycle_kind", "cycle_k", "toggle_full", "toggle_chart", "export",
                "methods", "help"}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Forwarder:
    """Engine listener (runs on the worker thread): events in, messages out.

    Progress is throttled to one message per ``interval`` seconds (plus every change of task), and
    honours the cancel event during pre-training too, where the engine itself does not check it.
    """

    def __init__(self, app: ReplayApp, cancel: threading.Event, interval: float = 0.1):
        from sml_sim import engine
        from sml_sim.retrainers.base import Cancelled

        self.app = app
        self.cancel = cancel
        self.interval = interval
        self.engine = engine
        self.Cancelled = Cancelled
        self._last_task: str | None = None
        self._last_post = 0.0

    def __call__(self, event) -> None:
        e = self.engine
        post = self.app.post_message
        if isinstance(event, e.Progress):
            if self.cancel.is_set():
                raise self.Cancelled()
            now = time.monotonic()
            if event.task != self._last_task or now - self._last_post >= self.interval or event.fraction >= 1.0:
                self._last_task, self._last_post = event.task, now
                post(StepProgress(event.period, event.task, float(event.fraction)))
        elif isinstance(event, e.MethodResult):
            post(MethodScored(self.app.result_row(event)))
        elif isinstance(event, e.MethodStarted):
            self._last_task = None
            post(MethodStarted(event.period, event.method))
        elif isinstance(event, e.PeriodArrived):
            post(PeriodArrived(event.period))
        elif isinstance(event, e.StepFinished):
            post(StepDone(event.period))


class ReplayApp(App):
    """Step a replay period by period and watch metrics, timings and failures live."""

    TITLE = "sml-sim replay"
    CSS = CSS
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-tiny"), (20, "-short"), (32, "-tall")]
    BINDINGS = [
        # help and quit first: a narrow terminal cuts the footer's end
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
        Binding("space", "step", "step", show=False),
        Binding("n", "step", "step"),
        Binding("a", "autoplay", "auto"),
        Binding("t", "to_test", "test"),
        Binding("r", "cycle_kind", "R/N"),
        Binding("k", "cycle_k", "K"),
        Binding("f", "toggle_full", "ranking"),
        Binding("c", "toggle_chart", "chart"),
        Binding("e", "export", "csv"),
        Binding("m", "methods", "methods"),
        # Textual's own ctrl+c only says "press ctrl+q": here it quits as q does (also behind a dialog).
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    # The converter from engine results to table rows; a test may freeze its timings.
    result_row = staticmethod(model.result_row)

    def __init__(self, *, store, config=None, run_id: int | None = None, threads: int | None = None,
                 export_dir: Path | str | None = None, auto_first_step: bool = True, dataset=None,
                 notes: list[str] = (), take_over: bool = False):
        super().__init__()
        if (config is None) == (run_id is None):
            raise ValueError("give exactly one of config (a new run) or run_id (resume)")
        self.store = store
        self.config = config
        self.dataset = dataset  # config's dataset, when the command line has read it already
        self.requested_run = run_id
        self.take_over = take_over  # --force: the run may be held by a process of another machine
        self.threads = threads
        self.command_notes = list(notes)  # the command line's notes (thread counts): the screen hides stderr
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.auto_first_step = auto_first_step
        self.cancel = threading.Event()
        self.replay = None  # db.replay.Replay, once loaded
        self.method_params: dict[str, dict] | None = None  # the run's method sections, once loaded
        # The same, set by the load worker the moment the run exists: a quit before ReplayLoaded
        # arrives must still record the run as interrupted.
        self.opened_replay = None
        self.view: RunView | None = None
        self.results: list[dict] = []
        self.choice = MetricChoice()
        self.hidden: set[str] = set()
        self.phase = "loading"  # loading | preparing | ready | stepping | finished | view | error
        self.building_kernel = False  # SML's CPU kernel compiles during preparation (about 30 s)
        self.view_only: str | None = None  # why the run is only shown: it cannot continue here
        self.busy = False
        self.goal: int | None = None  # last period to retrain on while autoplaying / running to test
        self.goal_name = ""
        self.clock: int | None = None
        self.fatal_error: str | None = None
        self.last_export: Path | None = None
        self.export_rows = 0  # result rows in that CSV
        self.export_through: int | None = None  # the last period in it
        self._busy_toast_until = 0.0
        self._step_methods: set[str] = set()  # methods scored by the running step
        self._step_late = False  # the running step catches up resumed methods
        self.steps_done = 0
        self._binding_state: tuple = ()
        self._table_owed = False
        self._charts_owed = False
        self._charts_drawn_at = 0.0
        self._layout_shape: tuple | None = None  # what fit_layout set last

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield ReplayHeader(id="header")
        with Horizontal(id="charts"):
            yield PeriodChart("metric", id="metric-chart")
            yield PeriodChart("retrain seconds", id="timing-chart")
        with Horizontal(id="bottom"):
            with Vertical(id="table-box"):
                yield Static("", id="table-title")
                yield ResultsTable(id="table")
                yield Static("", id="failures")
            yield LogPanel(id="log", markup=True, wrap=True, max_lines=1000, min_width=20)
        yield ActivityBar(id="activity")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(ReplayHeader).show(None, None, "loading the dataset...")
        self.query_one("#charts").loading = True
        what = f"run {self.requested_run}" if self.config is None else self.config.dataset.protocol
        self.activity(f"loading {what}...", 0.0)
        self.log_line(f"opening {escape(what)}; torch threads: {self.threads or 'default'}")
        for note in self.command_notes:
            self.log_line(f"[yellow]note:[/] {escape(note)}")
        self.busy = True
        self._load_worker()

    def on_unmount(self) -> None:
        gc.unfreeze()  # see on_replay_prepared

    # ------------------------------------------------------------------ workers

    @work(thread=True, group="replay", exit_on_error=False, name="load", description="load the dataset, pre-train")
    def _load_worker(self) -> str:
        from db.replay import MissingCheckpoints, Replay
        from sml_sim.evaluation import small_catalogue_note
        from sml_sim.retrainers.base import Cancelled

        cancel = self.cancel
        last = [0.0]

        def on_read(done, total) -> None:
            if cancel.is_set():
                raise Cancelled()
            now = time.monotonic()
            if total and now - last[0] >= 0.1:
                last[0] = now
                self.post_message(LoadProgress(min(1.0, done / total)))

        try:
            if self.config is not None:
                replay = Replay.new(self.store, self.config, progress=on_read, cancel=cancel, dataset=self.dataset)
                self.dataset = None  # the replay holds it now
            else:
                try:
                    replay = Replay.resume(self.store, self.requested_run, progress=on_read, cancel=cancel,
                                           take_over=self.take_over, command="replay --run")
                except MissingCheckpoints as exc:  # its results can still be shown
                    self.view_only = str(exc)
                    replay = Replay.resume(self.store, self.requested_run, progress=on_read, cancel=cancel,
                                           take_over=self.take_over, command="replay --run", view_only=True)
        except Cancelled:
            return "cancelled"
        self.opened_replay = replay
        replay.engine.subscribe(_Forwarder(self, cancel))
        ds = replay.dataset
        view = RunView(
            run_id=replay.run_id, dataset=ds.name, source=ds.source, synthetic=bool(ds.is_synthetic),
            device=str(replay.engine.device), n_periods=ds.n_periods, split=ds.split.as_dict(),
            methods=list(replay.config.methods),
            repeats_finished=self._finished_twin(replay.run_id) if self.config is not None else None,
            notes=[str(note) for note in ds.notes] + [n for n in [small_catalogue_note(ds.n_items)] if n],
            small_catalogue=small_catalogue_note(ds.n_items),
        )
        self.post_message(ReplayLoaded(view, self.store.results(replay.run_id), replay))
        if not replay.engine.finished and not replay.view_only:
            try:
                replay.engine.prepare()
            except Cancelled:
                return "cancelled"
        self.post_message(ReplayPrepared())
        return "ready"

    def _finished_twin(self, run_id: int) -> int | None:
        """The last finished run with exactly this new run's settings, if any (worker thread).

        `sml-sim replay` reopens the last run with the same settings, finished or not; with --new it
        starts another, and the app says which finished run it repeats."""
        from db.replay import same_settings

        runs = self.store.runs()
        twins = [r.run_id for r in runs if r.run_id != run_id and r.status == "finished"
                 and self.config is not None and same_settings(r.config, self.config)]
        return twins[-1] if twins else None

    @work(thread=True, group="replay", exit_on_error=False, name="step", description="retrain and score one period")
    def _step_worker(self) -> str:
        from sml_sim.retrainers.base import Cancelled

        replay = self.replay
        try:
            replay.engine.step()
        except Cancelled:
            return "cancelled"
        if replay.engine.finished:
            replay.finish()
            return "finished"
        return "stepped"

    @work(thread=True, group="export", exit_on_error=False, name="export", description="export CSV")
    def _export_worker(self, path: Path) -> tuple[Path, int, int | None]:
        from sml_sim import report

        view = self.view
        results = self.store.results(view.run_id)
        config = self.replay.config
        meta = report.ExportMeta(view.run_id, view.dataset, view.source, config.scenario, config.seed)
        n = report.write_results_csv(path, meta, results)
        return path, n, max((r["period"] for r in results), default=None)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if self.cancel.is_set():  # quitting: the widgets may be gone already
            return
        if worker.group == "export":
            if event.state == WorkerState.SUCCESS:
                path, n, through = worker.result
                self.last_export, self.export_rows, self.export_through = path, n, through
                upto = "" if through is None else f" (up to period {through})"
                self.log_line(f"[green]exported {n} result rows{upto} to {escape(str(path))}[/]"
                              + ("" if self.phase == "finished" else "; e again rewrites it with later periods"))
                self.notify(f"{n} rows{upto} written to {path}", title="CSV exported", markup=False)
            elif event.state == WorkerState.ERROR:  # the run is fine: only the file could not be written
                error = worker.error
                reason = None
                if isinstance(error, OSError) and error.strerror and self.view is not None:
                    reason = (f"cannot write {error.filename or 'the CSV'}: {error.strerror.lower()}; "
                              f"`sml-sim export {self.view.run_id} --out FILE{db_option(self.store.url)}` "
                              "writes it elsewhere")
                self.report_error("export failed", error, fatal=False, reason=reason)
            return
        if worker.group != "replay" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR,
                                                            WorkerState.CANCELLED):
            return
        self.busy = False
        if event.state == WorkerState.ERROR:
            self.goal = None
            if worker.name == "load":
                self.phase = "error"
                self.query_one("#charts").loading = False
                self.report_error("could not open the replay", worker.error)
            else:
                self.phase = "ready"
                self.report_error("the step failed (nothing of it was committed; press n to retry)",
                                  worker.error)
            self.update_status()
            return
        result = worker.result if event.state == WorkerState.SUCCESS else "cancelled"
        if result == "cancelled":
            self.phase = "ready"
            self.log_line("[yellow]step cancelled: nothing of it was committed[/]")
            self.update_status()
            return
        if worker.name == "load":
            self.query_one("#charts").loading = False
            finished = self.replay.engine.finished
            self.phase = "finished" if finished else "view" if self.view_only else "ready"
            self.update_status()
            if self.view_only:
                self.log_line(f"[yellow]shown only[/]: {escape(self.view_only)}")
            elif finished:
                self.log_line("this run is finished: every period is scored (e exports it; "
                              "--new starts another run with the same settings)")
            elif self.auto_first_step and not self.results:
                self.start_step()
            return
        self.steps_done += 1
        self.fatal_error = None  # a failed step retried with success is not the run's failure
        if result == "finished":
            self.phase = "finished"
            if self.goal is not None:
                self.log_line(f"{self.goal_name} done: the last period is scored")
            self.goal = None
            self.log_line("[bold green]run finished[/]: every period is scored; e exports the results")
            self.notify("every period is scored", title="run finished")
        else:
            self.phase = "ready"
            if self.goal is not None and self.replay.engine.next_step <= self.goal:
                self.start_step()
                return
            if self.goal is not None:
                self.log_line(f"{self.goal_name} done")
                self.goal = None
        self.update_status()

    def catching_up(self) -> model.CatchUp | None:
        """Resumed methods that lag behind the others (see ``model.catch_up``)."""
        if self.replay is None or self.view is None:
            return None
        engine = self.replay.engine
        return model.catch_up(self.view.methods, engine.committed, engine.first_step, engine.paused, engine.failed)

    def selected_live(self) -> list[str]:
        """The methods the next steps train: checked in the methods dialog and not failed."""
        if self.replay is None or self.view is None:
            return []
        engine = self.replay.engine
        return [m for m in self.view.methods if m not in engine.paused and m not in engine.failed]

    def start_step(self) -> bool:
        if self.busy or self.phase not in ("ready",) or self.replay is None:
            return False
        if self.replay.engine.finished:
            self.phase = "finished"
            self.update_status()
            return False
        if self.replay.engine.next_step > self.replay.engine.last_step:  # only paused methods are behind
            self.goal = None
            self.notify("the shown methods are scored to the end; m resumes a paused method"
                        if self.selected_live() else "no method is selected: m picks the methods to train",
                        title="step", timeout=BUSY_TOAST)
            self.update_status()
            return False
        self.busy = True
        self.phase = "stepping"
        self._step_methods = set()
        self._step_late = self.catching_up() is not None  # this step retrains lagging methods only
        t = self.replay.engine.next_step
        self.activity(f"period {t}: starting", 0.0)
        self.update_bindings()
        self._step_worker()
        return True

    # ------------------------------------------------------------------ messages from the workers

    def on_load_progress(self, message: LoadProgress) -> None:
        self.activity(f"reading the data {message.fraction:.0%}", message.fraction)

    def on_replay_loaded(self, message: ReplayLoaded) -> None:
        self.replay = message.replay
        self.method_params = message.replay.config.method_params
        self.view = message.view
        self.results = list(message.results)
        self.phase = "preparing"
        if self.results:
            self.clock = max(r["period"] for r in self.results)
        new = self.config is not None
        how = "started" if new else "opened (finished)" if self.replay.engine.finished else "resumed"
        self.log_line(f"run {self.view.run_id} {how}: {escape(self.view.dataset)}, "
                      f"methods {escape(', '.join(self.view.methods))}"
                      + ("" if new else f", {len(self.results)} results already committed"))
        twin = self.view.repeats_finished
        if twin is not None:  # `replay --new` next to a finished run with the same settings
            self.log_line(f"run {self.view.run_id} is a new run: run {twin} has the same settings and is finished "
                          f"(`sml-sim replay --run {twin}`, with the same --db, shows it)")
        if self.view.synthetic:
            self.log_line(f"[black on yellow] SYNTHETIC [/] {escape(self.view.source)}")
        for note in self.view.notes:  # as `sml-sim run` prints them: skipped lines, a scaled split...
            self.log_line(f"[yellow]note:[/] {escape(note)}")
        if new:
            self.activity("replaying the periods before retraining, pre-training the initial model", 0.0)
        elif not self.replay.engine.finished:
            self.activity("restoring the methods from their checkpoints", 0.0)
        self.refresh_views()
        self.update_status()

    def on_replay_prepared(self, message: ReplayPrepared) -> None:
        if self.replay is None or not (self.replay.engine.finished or self.view_only):  # nothing to train
            resumed = self.replay is not None and bool(self.replay.engine.committed)
            self.log_line("methods restored from their checkpoints" if resumed else "initial model ready")
        # Everything loaded so far (dataset, models, widgets) lives as long as the app: keep it out
        # of the cyclic collector's full passes, which otherwise stall the UI now and then.
        gc.freeze()

    def on_period_arrived(self, message: PeriodArrived) -> None:
        # never backwards: a resumed run's preparation replays the early periods again
        self.clock = message.period if self.clock is None else max(self.clock, message.period)
        self.update_status()

    def on_method_started(self, message: MethodStarted) -> None:
        self.activity(Text.assemble(("training ", ""), (message.method, "bold"),
                                    f" on period {message.period} (scored on {message.period + 1})"), 0.0)

    def on_step_progress(self, message: StepProgress) -> None:
        task = message.task
        if task == "kernel":
            self.building_kernel = message.fraction < 1
            self.update_status()
            if message.fraction >= 1:
                from sml_sim.models import fused

                if fused.fallback_note():
                    self.log_line(f"[yellow]note:[/] {escape(fused.fallback_note())}")
                elif fused.last_build_seconds is not None:
                    self.log_line(f"built SML's fused CPU kernel in {fused.last_build_seconds:.0f} s "
                                  "(cached for later runs)")
                return
            text = Text("building SML's fused CPU kernel (once per machine, about 30 s)")
        elif task == "pretrain":
            text = Text.assemble("pre-training the initial model on periods before ",
                                 str(self.view.split["retrain_start"] if self.view else "the start"))
        elif task.endswith(": evaluate"):
            method = task.split(":")[0]
            text = Text.assemble(("scoring ", ""), (method, "bold"), f" on period {message.period + 1}")
        else:
            text = Text.assemble(("training ", ""), (task, "bold"),
                                 f" on period {message.period} (scored on {message.period + 1})")
        self.activity(text, message.fraction)

    def on_method_scored(self, message: MethodScored) -> None:
        row = message.row
        model.merge_result(self.results, row)
        self._step_methods.add(row["method"])
        if row["status"] == "failed":
            self.log_line(f"[bold red]{escape(row['method'])} failed at period {row['period']}[/]: "
                          f"{escape(str(row['error']))} (the other methods go on)")
            self.notify(f"{row['method']}: {row['error']}", title="method failed", severity="error", timeout=8,
                        markup=False)
            if self.goal is not None:
                self.log_line(f"{self.goal_name} stopped because {row['method']} failed")
                self.goal = None
        self.schedule_refresh()

    def on_step_done(self, message: StepDone) -> None:
        period = message.period
        split = self.view.split_of(period) if self.view else ""
        if self.refresh_pending:  # the period is complete: draw it all now
            self.refresh_views()
        # Only the methods this step scored: a catch-up step retrains the lagging ones alone.
        summary = model.step_summary(self.results, period, self.choice, self.view.methods if self.view else None,
                                     only=self._step_methods)
        late = self._step_late
        self.activity(f"period {period} scored" + (" (catch-up)" if late else ""), 1.0)
        self.log_line(f"[b]period {period}[/] {split}: {self.choice.short} {escape(summary)}"
                      + (" [dim](catch-up)[/]" if late else ""))

    # ------------------------------------------------------------------ views

    def log_line(self, text: str) -> None:
        self.query_one("#log", LogPanel).add(text)

    def activity(self, text: str | Text, fraction: float | None = None) -> None:
        self.query_one(ActivityBar).say(text, fraction)

    def report_error(self, what: str, error: BaseException | None, fatal: bool = True,
                     reason: str | None = None) -> None:
        """Log an error; ``fatal`` ones are the run's (it is recorded failed unless a later step succeeds),
        others (an export) only the user's to see. ``reason`` says it in the user's terms."""
        if reason is None:
            from db.store import StoreError
            from sml_sim.data.base import DataError
            from sml_sim.engine import CheckpointError

            if isinstance(error, (StoreError, DataError, CheckpointError)):
                reason = str(error)  # written for the user, hint included: whole, and no type name
            else:
                reason = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
                reason = reason[:300]
        reason = reason.strip().splitlines()[0] if reason.strip() else reason
        if fatal:
            self.fatal_error = reason
        self.log_line(f"[bold red]{what}[/]: {escape(reason)}")
        self.notify(f"{what}: {reason}", title="error", severity="error", timeout=10, markup=False)
        self.activity(Text(f"error: {reason}", style="red"))

    def visible_methods(self) -> list[str]:
        methods = self.view.methods if self.view else []
        return [m for m in methods if m not in self.hidden]

    def schedule_refresh(self) -> None:
        """Redraw after a result: the table once per burst (each method's result arrives alone), the
        charts at most every CHART_EVERY seconds while a step runs (and at its end, see on_step_done):
        a plot costs tens of milliseconds of the one interpreter lock the UI shares with training."""
        if not self._table_owed:
            self._table_owed = True
            self.set_timer(0.1, self._flush_table)
        if not self._charts_owed:
            self._charts_owed = True
            wait = CHART_EVERY - (time.monotonic() - self._charts_drawn_at)
            self.set_timer(max(0.1, wait), self._flush_charts)

    @property
    def refresh_pending(self) -> bool:
        """Results have arrived that the table or the charts do not show yet."""
        return self._table_owed or self._charts_owed

    def _flush_table(self) -> None:
        if self._table_owed:
            self.refresh_views(charts=False)

    def _flush_charts(self) -> None:
        if self._charts_owed:
            self.refresh_views()

    def refresh_views(self, charts: bool = True) -> None:
        self._table_owed = False
        if charts:
            self._charts_owed = False
        if self.view is None:
            return
        methods = self.visible_methods()
        colors = model.method_colors(self.view.methods)
        choice = self.choice
        table = model.results_table(self.results, methods, choice, self.method_params)
        wide = self.screen.size.width >= WIDE
        with self.batch_update():
            self.query_one(ResultsTable).show(table, choice, colors, wide)
            ref = table.reference or ("sml" if "sml" in methods else "the best")
            # first: a narrow terminal cuts the title's end, and missing rows must not go unnoticed
            hidden = f"hidden: {', '.join(sorted(self.hidden))} · " if self.hidden else ""
            # The table shows Recall and NDCG both: its title names only what applies to both.
            title = (f"{hidden}{choice.ranking} · test = mean of {table.n_test} period{'' if table.n_test == 1 else 's'}"
                     f" · RI % = {ref} vs row")
            label = self.query_one("#table-title", Static)
            if title != str(label.content):
                label.update(Text(title), layout=False)  # a fixed line: no relayout
            failures = self.query_one("#failures", Static)
            failed = [r for r in table.rows if r.failed]
            text = "\n".join(f"x {r.method} failed at period {r.period.split()[0]}: {r.error}" for r in failed)
            if text != str(failures.content):
                failures.update(Text(text))  # reasons are plain text, never markup
                failures.set_class(bool(failed), "-shown")
            self.call_after_refresh(self.fit_layout)
            if not charts:
                return
            self._charts_drawn_at = time.monotonic()
            self.query_one("#metric-chart", PeriodChart).set_data(
                model.metric_series(self.results, choice.key, methods),
                title=f"{choice.short}{'' if choice.full else ' sampled'} [r/k/f]", view=self.view, colors=colors)
            self.query_one("#timing-chart", PeriodChart).set_data(
                model.timing_series(self.results, methods), title="retrain seconds",
                view=self.view, colors=colors)

    def update_status(self) -> None:
        status = {
            "loading": "loading...", "preparing": "pre-training..." if self.config is not None else "restoring...",
            "stepping": "retraining...", "view": "shown only",
            "finished": "finished", "error": "error", "ready": "",
        }[self.phase]
        if self.building_kernel and self.phase == "preparing":
            status = "building SML's kernel..."
        if self.goal is not None and self.phase in ("stepping", "ready"):
            status = f"{self.goal_name} {status}".strip()
        self.query_one(ReplayHeader).show(self.view, self.clock, status)
        if not self.busy:
            if self.phase == "finished":
                self.activity("finished: every period is scored. e exports the CSV, q quits", 1.0)
            elif self.phase == "view":
                self.activity(Text("shown only, it cannot continue here (see the log); e exports the CSV, q quits",
                                   style="yellow"))
            elif self.phase == "ready" and self.replay is not None:
                late = self.catching_up()
                if late is not None:
                    self.activity(f"ready: n catches up {', '.join(late.methods)}: retrains on {late.periods}, "
                                  f"scores {late.scored} · a autoplay · ? help", None)
                else:
                    engine = self.replay.engine
                    t = engine.next_step
                    if t > engine.last_step and not self.selected_live():
                        self.activity("no method is selected: m picks the methods to train and show · "
                                      "e exports · q quits", None)
                    elif t > engine.last_step:  # the shown methods are done; a paused one is not
                        waiting = sorted(m for m in engine.paused if m not in engine.failed)
                        self.activity(f"the shown methods are scored to the end; {', '.join(waiting)} "
                                      f"{'is' if len(waiting) == 1 else 'are'} paused: m resumes, then n "
                                      "catches up · e exports · q quits", None)
                    else:
                        self.activity(f"ready: n retrains on period {t}, scores {t + 1} · a autoplay · ? help",
                                      None)
        self.update_bindings()

    def update_bindings(self) -> None:
        """Refresh the footer only when a key's enabled state changed (the footer rebuilds itself)."""
        state = tuple(self.check_action(a, ()) for a in ("step", "to_test", "autoplay", "export", "methods"))
        if state != self._binding_state:
            self._binding_state = state
            self.refresh_bindings()

    def on_resize(self) -> None:
        self.call_after_refresh(self.refresh_views)  # once the screen has its new size
        self.call_after_refresh(self.refresh_bindings)  # `c` (chart) only on narrow terminals

    def on_log_panel_resized(self) -> None:
        self.call_after_refresh(self.fit_layout)

    def fit_layout(self) -> None:
        """Keep every method's row, the activity line and the footer on screen: the charts get the
        height left over, and are hidden when that is too little to read; only past that does the
        table scroll (arrow keys). Called once the widgets have their sizes."""
        if self.cancel.is_set():  # quitting: the widgets may be gone already
            return
        main = self.screen_stack[0]  # the main screen, also while a dialog is open
        height, narrow = main.size.height, main.size.width < WIDE
        table = self.query_one(ResultsTable)
        failures = self.query_one("#failures")
        log = self.query_one("#log")
        chrome = self.query_one(ReplayHeader).outer_size.height + 2  # + the activity line and the footer
        below = 1 + (failures.outer_size.height if failures.display else 0)  # the title, the failures
        # its header and rows, and a horizontal scrollbar when its columns are wider than the screen
        rows = table.row_count + 1 + (table.virtual_size.width > main.size.width)
        log_height = log.outer_size.height
        table_room = max(3, height - chrome - below - (log_height if narrow else 0))
        bottom = below + min(rows, table_room)
        bottom = bottom + log_height if narrow else max(bottom, log_height)
        shape = (table_room, None if narrow else max(3, height - chrome), height - chrome - bottom < MIN_CHART_ROWS)
        if shape == self._layout_shape:
            return
        self._layout_shape = shape
        table.styles.max_height, log.styles.max_height, no_charts = shape
        main.set_class(no_charts, "-no-charts")

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MAIN_ACTIONS and isinstance(self.screen, ModalScreen):
            return False
        if action in ("step", "to_test"):
            # Shown enabled while a step runs (dimming it would rebuild the footer twice a step, a
            # visible stall); the action itself refuses to start a second step.
            return True if self.phase in ("ready", "stepping") else None
        if action == "autoplay":
            return True if self.phase in ("ready", "stepping") else None
        if action in ("export", "methods"):
            return True if self.view is not None else None
        if action == "toggle_chart":  # both charts are shown on wide terminals
            return self.screen.size.width < WIDE
        return True

    def busy_toast(self, title: str) -> None:
        """Say that a step is running, once: pressing the key again while it shows adds no toast."""
        now = time.monotonic()
        if now >= self._busy_toast_until:
            self._busy_toast_until = now + BUSY_TOAST
            stop = {"autoplay": "; a stops autoplay", "to test": "; a stops the run to test",
                    "catch-up": "; a stops the catch-up"}.get(self.goal_name, "") if self.goal is not None else ""
            self.notify(f"a step is running: wait for it to finish{stop}", title=title, timeout=BUSY_TOAST)

    def action_step(self) -> None:
        if self.busy:
            self.busy_toast("step")
            return
        self.goal = None
        late = self.catching_up()
        if late is not None:
            # Resumed methods retrain on each period they missed, in order, one engine step per
            # period (each such step leaves the others alone); n runs them all, then stops.
            self.goal, self.goal_name = late.front - 1, "catch-up"
            self.log_line(f"catching up {escape(', '.join(late.methods))}: retraining on {late.periods}, "
                          f"scoring {late.scored}, as the others were (a stops)")
        if self.start_step() and late is not None:
            self.update_status()

    def action_autoplay(self) -> None:
        if self.goal is not None:
            self.goal = None
            self.log_line(("autoplay off" if self.goal_name == "autoplay" else f"{self.goal_name} stopped")
                          + (" (the running step finishes)" if self.busy else ""))
        elif self.replay is not None:
            self.goal, self.goal_name = self.replay.engine.last_step, "autoplay"
            self.log_line("autoplay on: stepping to the last period (a stops)")
            self.start_step()
        self.update_status()

    def action_to_test(self) -> None:
        if self.replay is None or self.view is None:
            return
        if self.busy:
            self.busy_toast("run to test")
            return
        goal = self.view.first_test - 1
        if self.replay.engine.next_step > goal:
            self.notify("the first test period is already scored", title="run to test")
            return
        self.goal, self.goal_name = goal, "to test"
        self.log_line(f"running to the first test period ({self.view.first_test})")
        self.start_step()
        self.update_status()

    def action_cycle_kind(self) -> None:
        self.choice = self.choice.next_kind()
        self.refresh_views()

    def action_cycle_k(self) -> None:
        self.choice = self.choice.next_k()
        self.refresh_views()

    def action_toggle_full(self) -> None:
        self.choice = self.choice.toggle_full()
        self.refresh_views()
        if self.view is not None and self.view.small_catalogue:  # else f seems to change nothing
            self.notify(self.view.small_catalogue, title=self.choice.ranking, markup=False, timeout=6)

    def action_toggle_chart(self) -> None:
        self.screen.toggle_class("-timing")

    def action_export(self) -> None:
        if self.view is None:
            return
        if self.last_export is not None:  # this session's file: e again rewrites it with later periods
            path = self.last_export
        else:
            path = export_path(self.export_dir or Path.cwd(), getattr(self.store, "sqlite_path", None),
                               self.view.run_id)
        self._export_worker(path)

    def action_methods(self) -> None:
        if self.view is None:
            return

        def apply(visible: set[str] | None) -> None:
            if visible is None:
                return
            resumed = sorted(self.hidden & visible)
            self.hidden = set(self.view.methods) - visible
            if self.replay is not None:
                # Unchecked methods also stop training; checked again, they catch up.
                self.replay.engine.paused = set(self.hidden)
            late = self.catching_up()
            if resumed and late is not None and set(resumed) & set(late.methods):
                self.log_line(f"{escape(', '.join(late.methods))} missed {late.periods} (scored on the next): "
                              f"n retrains {'it' if len(late.methods) == 1 else 'them'} on each in turn, the "
                              f"others' results stay; then n moves the clock on again")
            self.refresh_views()
            self.update_status()

        self.push_screen(MethodsScreen(self.view.methods, self.hidden), apply)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def outcome(self) -> ReplayOutcome:
        """Once the app has exited: record the run's status and say how it ended."""
        replay = self.replay or self.opened_replay
        if replay is not None and not replay.view_only:  # a run only shown is left as it was
            if replay.engine.finished:
                replay.finish()
            else:  # a damaged checkpoint stops the run without failing it: it stays interrupted
                replay.interrupted(None if (self.fatal_error or "").startswith("CheckpointError") else self.fatal_error)
        outdated = False
        if replay is not None and self.last_export is not None:
            # results committed after the export: the store's count no longer matches the file's
            outdated = len(self.store.results(replay.run_id)) != self.export_rows
        return ReplayOutcome(run_id=None if replay is None else replay.run_id,
                             finished=replay is not None and replay.engine.finished,
                             error=self.fatal_error, exported_to=self.last_export,
                             exported_rows=self.export_rows, exported_through=self.export_through,
                             export_outdated=outdated,
                             repeats_finished=self.view.repeats_finished if self.view is not None else None,
                             view_only=self.view_only)

    async def action_quit(self) -> None:
        self.cancel.set()  # the engine raises Cancelled at its next batch; committed periods stay
        self.goal = None
        if self.busy:
            self.activity("cancelling the running step and quitting...")
        self.exit()


def export_path(folder: Path, db_file: Path | None, run_id: int) -> Path:
    """Where `e` writes run ``run_id``'s CSV: ``<db stem>-run-<id>.csv`` (``sml-sim-run-<id>.csv``
    for a store that is not an SQLite file), so two stores' run 1 exported in one folder differ; an
    existing file is never replaced: ``-2``, ``-3``... are added."""
    stem = Path(db_file).stem if db_file is not None else "sml-sim"
    base = f"{stem}-run-{run_id}"
    path = (Path(folder) / f"{base}.csv").resolve()
    n = 2
    while path.exists() or path.is_symlink():  # a dangling link is a name taken too
        path = path.with_name(f"{base}-{n}.csv")
        n += 1
    return path


def run_replay_app(*, store, config=None, run_id: int | None = None, threads: int | None = None,
                   dataset=None, notes: list[str] = (), take_over: bool = False) -> ReplayOutcome:
    """Open the TUI on a new run (``config``) or an existing one (``run_id``), record the run's status
    when it closes, and say how it ended (the command line prints it). ``notes`` go to the log;
    ``take_over`` lets ``run_id`` be one that a process of another machine seems to hold."""
    import torch

    n = threads if threads else max(1, _cores() - 1)  # leave a core to the UI
    torch.set_num_threads(max(1, n))
    # The training thread holds the GIL between its (GIL-releasing) torch calls; a shorter switch
    # interval hands the GIL to the UI thread sooner when it wakes up for a key (default 5 ms).
    sys.setswitchinterval(SWITCH_INTERVAL)
    app = ReplayApp(store=store, config=config, run_id=run_id, threads=n, dataset=dataset, notes=notes,
                    take_over=take_over)
    app.run()
    # The worker thread has ended here (the event loop joins its executor on exit).
    return app.outcome()


@dataclass(frozen=True)
class ReplayOutcome:
    run_id: int | None  # None: the replay never opened
    finished: bool
    error: str | None
    exported_to: Path | None  # the CSV the user wrote with e (the last one), as it was then:
    exported_rows: int = 0  # its result rows
    exported_through: int | None = None  # the last period in it (None: no rows)
    export_outdated: bool = False  # periods were committed after it: the file lacks them
    repeats_finished: int | None = None  # this new run has the settings of this finished run
    view_only: str | None = None  # the run was only shown: why it cannot continue here
