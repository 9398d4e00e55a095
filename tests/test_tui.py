"""The replay TUI driven headless (Textual Pilot) on a tiny synthetic stream with fast retrainers.

8 periods split 5/1/2 with retraining from period 2: steps retrain on periods 2..6 and score 3..7;
period 5 is validation, 6 and 7 are test. Each app run takes a second or two.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import torch

from app.tui import ReplayApp
from app.tui import app as tui_app
from app.tui.model import MetricChoice, fmt_value, results_table
from app.tui.widgets import LogPanel, PeriodChart, ResultsTable, y_ticks
from db.store import Store
from sml_sim import report
from sml_sim.config import RunConfig
from sml_sim.data.protocols import DatasetSpec
from sml_sim.retrainers import METHODS
from sml_sim.retrainers.base import Retrainer

SIZE = (100, 32)


def tiny_config(methods=("fine", "pop", "random")) -> RunConfig:
    return RunConfig(
        scenario="tui-test",
        dataset=DatasetSpec(protocol="synthetic-yelp", scale=0.002, periods=8, split="5/1/2", retrain_start=2),
        methods=list(methods), method_params={"fine": {"epochs": 1}}, pretrain={"epochs": 1}, device="cpu",
    )


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic sums, and the UI keeps the other core
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path}/t.db")


def make_app(store, tmp_path, **kw) -> ReplayApp:
    kw.setdefault("config", tiny_config())
    return ReplayApp(store=store, export_dir=tmp_path, **kw)


async def settle(pilot, app: ReplayApp, until=None, timeout: float = 30.0) -> None:
    """Wait until no worker runs, the charts show the latest data, and ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        charts_drawn = not app.refresh_pending and all(chart.up_to_date for chart in app.query(PeriodChart))
        if not app.busy and app.phase in ("ready", "finished", "view", "error") and charts_drawn \
                and (until is None or until()):
            await pilot.pause()
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting: phase={app.phase} busy={app.busy} results={len(app.results)}")


async def interrupted_after_one_step(store, tmp_path) -> None:
    """Run 1: one period committed, then quit; recorded as interrupted, as the command line does."""
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("q")
    app.replay.interrupted()


def rows_for(app: ReplayApp, period: int) -> dict[str, dict]:
    return {r["method"]: r for r in app.results if r["period"] == period}


# ---------------------------------------------------------------------------------------------- the basics


async def test_opening_pretrains_then_runs_the_first_step(store, tmp_path):
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        assert app.view.run_id == 1 and app.view.synthetic
        assert "SYNTHETIC" in str(app.query_one("#header").content)
        first = rows_for(app, 3)
        assert set(first) == {"fine", "pop", "random"}
        assert app.clock == 3
        # what is on screen is what the store committed
        stored = {r["method"]: r for r in store.results(1) if r["period"] == 3}
        assert {m: r["metrics"] for m, r in first.items()} == {m: r["metrics"] for m, r in stored.items()}

        table = app.query_one(ResultsTable)
        assert table.row_count == 3
        for method, r in first.items():
            assert table.cell_text(method, "R@20") == fmt_value(r["metrics"]["recall@20"])
            assert table.cell_text(method, "N@20") == fmt_value(r["metrics"]["ndcg@20"])
            assert table.cell_text(method, "period") == "3 trn"
            assert table.cell_text(method, "test R@20") == "-"  # no test period yet

        chart = app.query_one("#metric-chart", PeriodChart)
        assert chart.series.points["fine"] == [(3, first["fine"]["metrics"]["recall@20"])]
        assert chart.series.in_sample == {}
        timing = app.query_one("#timing-chart", PeriodChart)
        assert timing.series.points["pop"] == [(3, first["pop"]["retrain_s"])]


async def test_step_keys_and_metric_cycling(store, tmp_path):
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("n")
        await settle(pilot, app, until=lambda: app.steps_done >= 2)
        await pilot.press("space")
        await settle(pilot, app, until=lambda: app.steps_done >= 3)
        assert sorted({r["period"] for r in app.results}) == [3, 4, 5]
        assert app.clock == 5
        chart = app.query_one("#metric-chart", PeriodChart)
        fine = [(r["period"], r["metrics"]["recall@20"]) for r in app.results if r["method"] == "fine"]
        assert chart.series.points["fine"] == fine
        assert "Recall@20 sampled" in chart.chart_title

        await pilot.press("r")  # NDCG
        assert app.choice == MetricChoice("ndcg", 20, False)
        assert "NDCG@20" in chart.chart_title
        assert chart.series.points["pop"] == [(r["period"], r["metrics"]["ndcg@20"])
                                              for r in app.results if r["method"] == "pop"]
        await pilot.press("k")  # K = 5
        await pilot.press("f")  # full ranking
        assert app.choice.key == "full_ndcg@5"
        assert chart.series.points["random"] == [(r["period"], r["metrics"]["full_ndcg@5"])
                                                 for r in app.results if r["method"] == "random"]
        table = app.query_one(ResultsTable)
        last = rows_for(app, 5)
        assert table.cell_text("fine", "N@5") == fmt_value(last["fine"]["metrics"]["full_ndcg@5"])
        assert table.cell_text("fine", "period") == "5 val"


async def test_run_to_test_then_running_mean_and_relative_improvement(store, tmp_path):
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("t")
        await settle(pilot, app, until=lambda: app.goal is None and app.steps_done >= 4)
        assert max(r["period"] for r in app.results) == 6  # the first test period, and no further
        assert app.phase == "ready"
        means = report.split_means(store.results(1), "test")
        ref = report.best_method(means, "recall@20")
        table = app.query_one(ResultsTable)
        for method in ("fine", "pop", "random"):
            assert table.cell_text(method, "test R@20") == fmt_value(means[method]["recall@20"])
            expected = "ref" if method == ref else (
                f"{report.relative_improvements_shared(store.results(1), 'test', ref)[method]['recall@20']:+.1f}%")
            assert table.cell_text(method, "RI R@20") == expected
        await pilot.press("a")  # autoplay to the end
        await settle(pilot, app, until=lambda: app.phase == "finished")
        assert max(r["period"] for r in app.results) == 7
        assert store.run(1).status == "finished"
        means = report.split_means(store.results(1), "test")
        assert means["pop"]["periods"] == 2
        assert table.cell_text("pop", "test R@20") == fmt_value(means["pop"]["recall@20"])
        # stepping is disabled once everything is scored
        assert app.check_action("step", ()) is None


async def test_export_writes_the_csv_and_shows_its_path(store, tmp_path):
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("e")
        deadline = time.monotonic() + 10
        while app.last_export is None and time.monotonic() < deadline:
            await pilot.pause(0.05)
        path = tmp_path / "t-run-1.csv"  # named after the store's file, t.db
        assert app.last_export == path.resolve()
        lines = path.read_text().splitlines()
        assert lines[0].startswith("run_id,dataset,source,scenario,seed,method,period")
        assert len(lines) == 1 + 3
        log_text = "\n".join(line.text for line in app.query_one("#log").lines)
        assert str(path.resolve()) in log_text.replace("\n", "")


async def test_method_picker_pauses_and_hides_methods(store, tmp_path):
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("m")
        await pilot.pause()
        assert type(app.screen).__name__ == "MethodsScreen"
        await pilot.press("n")  # behind the modal the step key does nothing
        assert not app.busy
        await pilot.press("space")  # toggles the highlighted (first) method: fine
        await pilot.press("enter")
        await pilot.pause()
        assert app.hidden == {"fine"}
        assert "fine" not in app.query_one("#metric-chart", PeriodChart).series.points
        assert app.query_one(ResultsTable).row_count == 2
        assert str(app.query_one("#table-title").content).startswith("hidden: fine · ")  # before a cut
        # an unchecked method is paused: the next step trains the others only
        await pilot.press("n")
        await settle(pilot, app, until=lambda: app.steps_done >= 2)
        assert "fine" not in rows_for(app, 4) and "pop" in rows_for(app, 4)
        # checked again, it catches up on the period it missed
        await pilot.press("m")
        await pilot.pause()
        await pilot.press("space")
        await pilot.press("enter")
        await pilot.pause()
        assert app.hidden == set()
        await pilot.press("n")
        await settle(pilot, app, until=lambda: app.steps_done >= 3)
        assert "fine" in rows_for(app, 4)


async def test_help_screen_opens_and_closes(store, tmp_path):
    from textual.widgets._footer import FooterKey

    app = make_app(store, tmp_path, auto_first_step=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        # its footer says what q does here: close (it said `q quit`, the main screen's key)
        keys = {(k.key_display, k.description) for k in app.screen.query(FooterKey)}
        assert keys == {("q/esc/?", "close")}, keys
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.screen_stack[0]
        for key in ("q", "question_mark"):
            await pilot.press("question_mark")
            await pilot.pause()
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is app.screen_stack[0] and app.is_running
        assert app.results == []  # auto_first_step=False: nothing ran


@pytest.mark.parametrize("behind_help", [False, True], ids=["main", "help"])
async def test_ctrl_c_quits_like_q(store, tmp_path, behind_help):
    """Textual's ctrl+c only said "Press ctrl+q to quit the app"."""
    app = make_app(store, tmp_path, auto_first_step=False)
    toasts = []
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        app.notify = lambda message, **kw: toasts.append(message)
        if behind_help:
            await pilot.press("question_mark")
            await pilot.pause()
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.cancel.is_set()  # the quit action ran: the same path as q
    assert not app.is_running and not toasts
    assert app.outcome().run_id == 1 and store.run(1).status == "interrupted"


async def test_the_methods_dialog_shows_the_check_state_without_colour(store, tmp_path):
    from app.tui.screens import MethodList

    app = make_app(store, tmp_path, auto_first_step=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        app.hidden = {"pop"}
        await pilot.press("m")
        await pilot.pause()
        methods = app.screen.query_one(MethodList)
        lines = {line.text.split()[-1]: line.text for line in (methods.render_line(y) for y in range(3))}
        assert lines["fine"].startswith("▐X▌ fine") and lines["random"].startswith("▐X▌ random"), lines
        assert lines["pop"].startswith("▐ ▌ pop"), lines  # unchecked: no X at all, whatever the colours
        await pilot.press("space")  # fine, highlighted: unchecked now
        await pilot.pause()
        assert methods.render_line(0).text.startswith("▐ ▌ fine")
        await pilot.press("escape")


async def test_with_every_method_unchecked_the_status_says_none_is_selected(store, tmp_path):
    """It read "the shown methods are scored to the end" at period 3."""
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("m")
        await pilot.pause()
        for key in ("space", "down", "space", "down", "space"):
            await pilot.press(key)
        await pilot.press("enter")
        await pilot.pause()
        assert app.hidden == {"fine", "pop", "random"}
        activity = app.query_one("#activity").text
        assert "no method is selected: m picks the methods" in activity, activity
        assert "scored to the end" not in activity
        toasts = []
        app.notify = lambda message, **kw: toasts.append(message)
        done = app.steps_done
        await pilot.press("n")
        await pilot.pause()
        assert app.steps_done == done and not app.busy
        assert toasts == ["no method is selected: m picks the methods to train"], toasts


async def test_the_dataset_notes_are_logged_as_run_prints_them(store, tmp_path):
    """`sml-sim run` prints the dataset's notes (skipped lines, a scaled split); the TUI did not."""
    config = tiny_config()
    config.dataset = DatasetSpec(protocol="synthetic-yelp", scale=0.002, periods=8, retrain_start=2)  # split scaled
    app = make_app(store, tmp_path, config=config, auto_first_step=False)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot, app)
        notes = app.replay.dataset.notes
        assert notes and "split scaled" in notes[0]
        lines = " ".join(log_text(app).split())  # the log wraps long lines
        for note in notes:
            assert f"note: {' '.join(note.split())}" in lines, lines


async def test_the_command_lines_notes_are_logged(store, tmp_path):
    app = make_app(store, tmp_path, auto_first_step=False, notes=["run 1 started with 1 thread; [later] use 2"])
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot, app)
        assert "note: run 1 started with 1 thread; [later] use 2" in " ".join(log_text(app).split())


def test_the_table_caption_names_no_fixed_candidate_count():
    """"sampled ranking (1+999)" was wrong on a catalogue of 108 items."""
    assert MetricChoice().ranking == "sampled ranking" and MetricChoice(full=True).ranking == "full ranking"
    assert "999" not in MetricChoice().label


def test_ri_compares_over_the_test_periods_both_have_scored():
    """While a resumed method catches up, its test mean covers fewer periods than the reference's:
    RI then compares the two over the periods both have (sml's 0.4 at period 6 against fine's 0.3)."""
    from sml_sim.evaluation import METRIC_KEYS

    def row(method, period, value):
        return {"method": method, "period": period, "split": "test", "in_sample": False, "status": "ok",
                "error": None, "n_cases": 5, "metrics": {k: value for k in METRIC_KEYS}, "retrain_s": 0.1,
                "eval_s": 0.0, "extra": {}}

    rows = [row("sml", 6, 0.4), row("pop", 6, 0.2), row("fine", 6, 0.3), row("sml", 7, 0.4), row("pop", 7, 0.2)]
    table = {r.method: r for r in results_table(rows, ["sml", "fine", "pop"], MetricChoice()).rows}
    assert table["sml"].ri == {"recall": "ref", "ndcg": "ref"}
    assert table["pop"].ri == {"recall": "+100.0%", "ndcg": "+100.0%"}
    assert table["fine"].ri == {"recall": "+33.3%", "ndcg": "+33.3%"}  # over period 6 only
    assert table["fine"].mean["recall"] == "0.3000"  # its own mean is still shown
    rows.append(row("fine", 7, 0.3))  # caught up
    table = {r.method: r for r in results_table(rows, ["sml", "fine", "pop"], MetricChoice()).rows}
    assert table["fine"].ri == {"recall": "+33.3%", "ndcg": "+33.3%"}
    full = {r.method: r for r in results_table(rows[:-1], ["sml", "fine", "pop"], MetricChoice(full=True)).rows}
    assert full["fine"].ri == {"recall": "+33.3%", "ndcg": "+33.3%"} and full["pop"].ri["recall"] == "+100.0%"
    disjoint = [row("sml", 7, 0.4), row("fine", 6, 0.3)]  # no period in common: nothing to compare
    table = {r.method: r for r in results_table(disjoint, ["sml", "fine"], MetricChoice()).rows}
    assert table["fine"].ri == {"recall": "-", "ndcg": "-"}


def test_without_sml_the_ri_reference_is_the_same_whatever_the_chart_shows():
    """The TUI picked the reference by the chart's metric: r or k could change it, and `sml-sim runs`
    (best mean test Recall@20) named another for the same run."""
    from sml_sim.evaluation import METRIC_KEYS

    def row(method, recall20, other):
        metrics = {k: (recall20 if k == "recall@20" else other) for k in METRIC_KEYS}
        return {"method": method, "period": 6, "split": "test", "in_sample": False, "status": "ok", "error": None,
                "n_cases": 5, "metrics": metrics, "retrain_s": 0.1, "eval_s": 0.0, "extra": {}}

    rows = [row("fine", 0.30, 0.10), row("full", 0.20, 0.25)]  # full is better at every other metric
    for choice in (MetricChoice(), MetricChoice(kind="ndcg", k=5), MetricChoice(k=10), MetricChoice(full=True)):
        assert results_table(rows, ["fine", "full"], choice).reference == "fine", choice
    assert report.ri_reference(rows) == "fine"  # as `sml-sim runs` says


def test_export_names_differ_per_store_and_never_replace_a_file(tmp_path):
    assert tui_app.export_path(tmp_path, tmp_path / "a.db", 1) == (tmp_path / "a-run-1.csv").resolve()
    assert tui_app.export_path(tmp_path, Path("/elsewhere/b.sqlite"), 1) == (tmp_path / "b-run-1.csv").resolve()
    assert tui_app.export_path(tmp_path, None, 3) == (tmp_path / "sml-sim-run-3.csv").resolve()
    (tmp_path / "a-run-1.csv").write_text("keep")
    (tmp_path / "a-run-1-2.csv").symlink_to(tmp_path / "nowhere" / "x.csv")  # dangling: taken too
    assert tui_app.export_path(tmp_path, tmp_path / "a.db", 1) == (tmp_path / "a-run-1-3.csv").resolve()


async def test_a_failed_export_is_not_the_runs_failure(store, tmp_path):
    """An export that cannot be written (here: its folder is gone) is logged; the run is not failed."""
    app = make_app(store, tmp_path / "gone")  # make_app's folder is where e writes
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("e")
        deadline = time.monotonic() + 10
        while "export failed" not in log_text(app) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        text = " ".join(log_text(app).split())  # the log's lines are wrapped at spaces
        assert "export failed" in text
        # said in the user's terms, with a way out, not as a Python exception
        assert "cannot write" in text and "no such file or directory" in text and "FileNotFoundError" not in text
        assert f"`sml-sim export 1 --out FILE --db {store.url}` writes it elsewhere" in text  # this store
        await pilot.press("q")
    outcome = app.outcome()
    assert outcome.error is None and store.run(1).status != "failed"


async def test_export_keeps_an_existing_file_and_rewrites_only_its_own(store, tmp_path):
    (tmp_path / "t-run-1.csv").write_text("another store's run 1\n")
    app = make_app(store, tmp_path)

    async def export(pilot, rows: int) -> None:
        await pilot.press("e")
        deadline = time.monotonic() + 10
        while app.export_rows != rows and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert app.export_rows == rows

    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await export(pilot, 3)
        own = (tmp_path / "t-run-1-2.csv").resolve()
        assert app.last_export == own
        await pilot.press("n")
        await settle(pilot, app, until=lambda: app.steps_done >= 2)
        await export(pilot, 6)  # e again: this session's file, rewritten with the later period
        assert app.last_export == own
        assert len(own.read_text().splitlines()) == 1 + 6
        assert (tmp_path / "t-run-1.csv").read_text() == "another store's run 1\n"
        assert not (tmp_path / "t-run-1-3.csv").exists()


# ---------------------------------------------------------------------------------------------- failures


class Boom(Retrainer):
    """Fails on its second period, like a NaN loss would."""

    kind = "boom"

    def fit_period(self, t, next_period=None) -> dict:
        if t >= 3:
            raise FloatingPointError("NaN loss at batch [7] [bold]")  # brackets: not markup
        return {}

    def score(self, cases, rows, n_items):
        return torch.zeros(len(rows), n_items)


async def test_a_failing_method_is_marked_and_the_others_go_on(store, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "boom", (Boom, {}, "fails"))
    app = make_app(store, tmp_path, config=tiny_config(("pop", "boom")))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("a")
        await settle(pilot, app, until=lambda: app.steps_done >= 2)
        assert app.goal is None  # autoplay stops on a failure
        boom = rows_for(app, 4)["boom"]
        assert boom["status"] == "failed" and "NaN loss" in boom["error"]
        table = app.query_one(ResultsTable)
        assert table.cell_text("boom", "method") == "x boom"
        assert table.cell_text("boom", "period") == "4 failed"
        failures = str(app.query_one("#failures").content)
        assert "boom failed at period 4" in failures and "NaN loss at batch [7] [bold]" in failures
        log_text = " ".join(line.text for line in app.query_one("#log").lines)
        assert "NaN loss at batch [7] [bold]" in log_text
        await pilot.press("n")
        await settle(pilot, app, until=lambda: app.steps_done >= 3)
        assert set(rows_for(app, 5)) == {"pop"}  # the failed method is not retrained


async def test_an_error_in_the_worker_is_shown_not_fatal(store, tmp_path, monkeypatch):
    import sml_sim.engine as engine

    app = make_app(store, tmp_path, auto_first_step=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)

        def broken(*a, **k):
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(engine, "build_cases", broken)
        await pilot.press("n")
        await settle(pilot, app, until=lambda: app.fatal_error is not None)
        assert app.is_running and app.phase == "ready"
        assert "RuntimeError: disk on fire" in app.fatal_error
        log_text = " ".join(line.text for line in app.query_one("#log").lines)
        assert "the step failed" in log_text and "disk on fire" in log_text
        monkeypatch.undo()
        await pilot.press("n")  # and it can be retried
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        assert set(rows_for(app, 3)) == {"fine", "pop", "random"}


# ---------------------------------------------------------------------------------------------- lifecycle


class Slow(Retrainer):
    """Works through many small batches, reporting progress (where cancellation is honoured)."""

    kind = "slow"
    stopped: threading.Event

    def fit_period(self, t, next_period=None) -> dict:
        try:
            for i in range(2000):
                time.sleep(0.005)
                self.report(i / 2000)
        finally:
            Slow.stopped.set()
        return {}

    def score(self, cases, rows, n_items):
        return torch.zeros(len(rows), n_items)


async def test_quit_cancels_the_running_step_quickly_and_keeps_committed_periods(store, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "slow", (Slow, {}, "slow"))
    monkeypatch.setattr(Slow, "stopped", threading.Event(), raising=False)
    app = make_app(store, tmp_path, config=tiny_config(("pop", "slow")), auto_first_step=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("n")
        deadline = time.monotonic() + 10
        while "slow" not in app.query_one("#activity").text and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert app.busy
        t0 = time.monotonic()
        await pilot.press("q")
    assert app.cancel.is_set()
    assert Slow.stopped.wait(3), "the running step did not stop within 3 s of q"
    assert time.monotonic() - t0 < 3
    results = store.results(1)
    assert [(r["method"], r["period"]) for r in results] == [("pop", 3)]  # slow's period 3 never committed


async def test_resume_shows_the_committed_periods_and_continues(store, tmp_path):
    await interrupted_after_one_step(store, tmp_path)

    again = ReplayApp(store=store, run_id=1, export_dir=tmp_path)
    async with again.run_test(size=SIZE) as pilot:
        await settle(pilot, again)
        assert again.steps_done == 0  # no automatic step on resume: the results are already there
        assert sorted({r["period"] for r in again.results}) == [3]
        assert again.clock == 3  # the header's period, not the early periods the preparation replays
        assert again.query_one(ResultsTable).cell_text("pop", "period") == "3 trn"
        await pilot.press("n")
        await settle(pilot, again, until=lambda: again.steps_done >= 1)
        assert sorted({r["period"] for r in store.results(1)}) == [3, 4]


async def test_a_run_whose_checkpoints_are_missing_is_shown_not_continued(store, tmp_path):
    """A store copied without its checkpoints folder: the TUI refused to open the run at all, though
    its results are all in the store."""
    import shutil

    from db.replay import checkpoint_root

    await interrupted_after_one_step(store, tmp_path)
    shutil.rmtree(checkpoint_root(store) / "run-1")
    committed = store.results(1)
    app = ReplayApp(store=store, run_id=1, export_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert app.phase == "view" and sorted({r["period"] for r in app.results}) == [3]
        assert "cannot continue: its checkpoints are not in" in log_text(app).replace("\n", " ")
        await pilot.press("n")
        await pilot.press("a")
        await pilot.pause(0.3)
        assert not app.busy and app.steps_done == 0
        await pilot.press("q")
    outcome = app.outcome()
    assert outcome.view_only and "cannot continue" in outcome.view_only and outcome.error is None
    assert store.run(1).status == "interrupted" and store.results(1) == committed  # left as it was


async def test_a_run_held_by_another_machine_opens_only_with_take_over(store, tmp_path):
    """`replay --run N` had no --force: a run killed on another host could be continued headless only."""
    from sqlalchemy import text

    await interrupted_after_one_step(store, tmp_path)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET status = 'running', owner = 'deadnode:4242' WHERE id = 1"))

    refused = ReplayApp(store=store, run_id=1, export_dir=tmp_path)
    async with refused.run_test(size=SIZE) as pilot:
        await settle(pilot, refused)
        assert refused.phase == "error"
        assert f"`sml-sim replay --run 1 --force --db {store.url}` continues it here" in refused.outcome().error
    taken = ReplayApp(store=store, run_id=1, export_dir=tmp_path, take_over=True)
    async with taken.run_test(size=SIZE) as pilot:
        await settle(pilot, taken)
        assert taken.phase == "ready" and sorted({r["period"] for r in taken.results}) == [3]


# ---------------------------------------------------------------------------------------------- review fixes


def log_text(app: ReplayApp) -> str:
    return "\n".join(line.text for line in app.query_one("#log").lines)


async def test_an_export_followed_by_more_periods_is_reported_as_outdated(store, tmp_path):
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("e")
        await settle(pilot, app, until=lambda: app.last_export is not None)
        assert "exported 3 result rows (up to period 3)" in log_text(app).replace("\n", "")
        await pilot.press("n")
        await settle(pilot, app, until=lambda: app.steps_done >= 2)
        await pilot.press("q")
    outcome = app.outcome()
    path = (tmp_path / "t-run-1.csv").resolve()
    assert outcome.exported_to == path and outcome.exported_rows == 3 and outcome.exported_through == 3
    assert outcome.export_outdated  # period 4 was committed after the export: the file lacks it
    assert len(path.read_text().splitlines()) == 1 + 3
    assert store.run(1).status == "interrupted"


async def test_an_export_of_every_committed_period_is_not_outdated(store, tmp_path):
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("e")
        await settle(pilot, app, until=lambda: app.last_export is not None)
        await pilot.press("q")
    outcome = app.outcome()
    assert outcome.exported_through == 3 and not outcome.export_outdated


async def test_pressing_n_during_a_step_shows_one_toast_not_one_per_press(store, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "slow", (Slow, {}, "slow"))
    monkeypatch.setattr(Slow, "stopped", threading.Event(), raising=False)
    app = make_app(store, tmp_path, config=tiny_config(("pop", "slow")), auto_first_step=False)
    toasts = []
    notify = app.notify

    def spy(message, *args, **kwargs):
        toasts.append(message)
        notify(message, *args, **kwargs)

    monkeypatch.setattr(app, "notify", spy)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("n")
        assert app.busy
        for key in "nnnnt":
            await pilot.press(key)
        await pilot.pause()
        assert toasts.count("a step is running: wait for it to finish") == 1
        await pilot.press("q")


async def test_a_key_pressed_during_autoplay_says_which_key_stops_it(store, tmp_path, monkeypatch):
    """space or n during autoplay only said "wait for it to finish"; a is what stops it."""
    monkeypatch.setitem(METHODS, "slow", (Slow, {}, "slow"))
    monkeypatch.setattr(Slow, "stopped", threading.Event(), raising=False)
    app = make_app(store, tmp_path, config=tiny_config(("pop", "slow")), auto_first_step=False)
    toasts = []
    monkeypatch.setattr(app, "notify", lambda message, *a, **kw: toasts.append(message))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("a")
        assert app.busy
        await pilot.press("space")
        await pilot.pause()
        assert toasts[-1] == "a step is running: wait for it to finish; a stops autoplay"
        await pilot.press("q")


async def test_a_resumed_method_catches_up_in_one_n_and_the_status_agrees_with_the_header(store, tmp_path):
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        app.hidden = {"fine"}  # as the methods dialog does (see test_method_picker_pauses_and_hides_methods)
        app.replay.engine.paused = {"fine"}
        for n in (2, 3):
            await pilot.press("n")
            await settle(pilot, app, until=lambda n=n: app.steps_done >= n)
        assert app.clock == 5 and "fine" not in rows_for(app, 5)
        await pilot.press("m")
        await pilot.pause()
        await pilot.press("space")  # check fine again
        await pilot.press("enter")
        await pilot.pause()
        assert app.hidden == set()
        activity = app.query_one("#activity").text
        assert "n catches up fine: retrains on periods 3-4, scores periods 4-5" in activity, activity
        assert "fine missed periods 3-4" in log_text(app).replace("\n", " ")
        await pilot.press("n")  # one key: both missed periods, then it stops
        await settle(pilot, app, until=lambda: app.goal is None and app.steps_done >= 5)
        assert {"fine", "pop", "random"} <= set(rows_for(app, 4)) and {"fine", "pop", "random"} <= set(rows_for(app, 5))
        assert not rows_for(app, 6)  # the clock did not move on by itself
        assert app.clock == 5 and app.replay.engine.next_step == 5
        assert "ready: n retrains on period 5, scores 6" in app.query_one("#activity").text
        lines = log_text(app)
        # the catch-up steps report fine alone, not the others' earlier results again
        assert re.search(r"period 4 train: Recall@20 fine \d\.\d{4} \(catch-up\)\n", lines), lines
        assert re.search(r"period 5 validation: Recall@20 fine \d\.\d{4} \(catch-up\)\n", lines), lines
        assert "catch-up done" in lines


async def test_the_log_keeps_its_newest_line_in_view_when_the_window_shrinks(store, tmp_path):
    app = make_app(store, tmp_path, auto_first_step=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        log = app.query_one("#log")
        for i in range(40):
            app.log_line(f"line {i}")
        await pilot.pause()
        assert log.scroll_y == log.max_scroll_y > 0
        await pilot.resize_terminal(80, 24)  # narrow: the log is 3-4 lines high
        await pilot.pause()
        await pilot.pause()
        assert log.scrollable_content_region.height <= 4
        assert log.scroll_y == log.max_scroll_y
        # a user who scrolled up stays where they were
        log.scroll_to(y=5, animate=False, immediate=True)
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        await pilot.pause()
        assert log.scroll_y == 5


async def test_r_switches_the_chart_metric_and_leaves_the_table_as_it_is(store, tmp_path):
    from app.tui.screens import HELP

    assert "chart and table metric" not in HELP and "the table shows both" in HELP
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        table = app.query_one(ResultsTable)
        title = str(app.query_one("#table-title").content)
        cells = {(m, c): table.cell_text(m, c) for m in ("fine", "pop") for c in ("R@20", "N@20")}
        await pilot.press("r")
        await pilot.pause()
        assert "NDCG@20" in app.query_one("#metric-chart", PeriodChart).chart_title
        # the table shows Recall and NDCG both: neither its title nor its cells change
        assert str(app.query_one("#table-title").content) == title and "Recall" not in title
        assert {(m, c): table.cell_text(m, c) for m in ("fine", "pop") for c in ("R@20", "N@20")} == cells


async def test_a_new_run_with_a_finished_runs_settings_says_so(store, tmp_path):
    first = make_app(store, tmp_path, auto_first_step=False)
    async with first.run_test(size=SIZE) as pilot:
        await settle(pilot, first)
        await pilot.press("q")
    store.set_run_status(1, "finished")  # as if every period had been scored

    app = make_app(store, tmp_path)  # what `sml-sim replay --new` does next to that finished run
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)  # it trains as any new run does
        assert app.view.run_id == 2 and app.view.repeats_finished == 1
        assert "run 2 (new; run 1 is finished)" in str(app.query_one("#header").content)
        text = log_text(app).replace("\n", " ")
        assert "run 2 is a new run: run 1 has the same settings and is finished" in text
        await pilot.press("q")
    assert app.outcome().repeats_finished == 1


async def test_a_new_run_with_other_settings_is_not_flagged(store, tmp_path):
    first = make_app(store, tmp_path, auto_first_step=False, config=tiny_config(("pop",)))
    async with first.run_test(size=SIZE) as pilot:
        await settle(pilot, first)
        await pilot.press("q")
    store.set_run_status(1, "finished")
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)  # the first step runs by itself
        assert app.view.repeats_finished is None and "is a new run" not in log_text(app)


def test_in_sample_points_are_kept_apart():
    from app.tui.model import metric_series

    rows = [
        {"method": "sml", "period": 3, "split": "train", "in_sample": True, "status": "ok", "metrics": {"recall@20": 0.9}},
        {"method": "sml", "period": 6, "split": "test", "in_sample": False, "status": "ok", "metrics": {"recall@20": 0.4}},
        {"method": "pop", "period": 3, "split": "train", "in_sample": False, "status": "ok", "metrics": {"recall@20": 0.2}},
        {"method": "pop", "period": 6, "split": "test", "in_sample": False, "status": "failed", "metrics": {}},
    ]
    s = metric_series(rows, "recall@20", ["sml", "pop"])
    assert s.points == {"sml": [(6, 0.4)], "pop": [(3, 0.2)]}
    assert s.in_sample == {"sml": [(3, 0.9)]}
    for r in rows:
        r.update(error=None, n_cases=1, retrain_s=0.0, eval_s=0.0)
    from sml_sim.evaluation import METRIC_KEYS

    rows[1]["metrics"] = {k: 0.4 for k in METRIC_KEYS}
    table = results_table(rows, ["sml", "pop"], MetricChoice())
    assert table.reference == "sml"
    assert [r.period for r in table.rows] == ["6 tst", "6 failed"]


# ---------------------------------------------------------------------------------------------- snapshots


def frozen_row(event) -> dict:
    """Timings that do not depend on the machine: a fixed figure per method and period."""
    row = tui_app.model.result_row(event)
    row["retrain_s"] = {"fine": 0.5, "pop": 0.01, "random": 0.002}.get(row["method"], 0.1) * (1 + row["period"] / 10)
    row["eval_s"] = 0.01
    return row


@pytest.fixture
def tui_snapshots(monkeypatch):
    """Keep this module's snapshots in tests/snapshots/test_tui/ (one SVG per test)."""
    import pytest_textual_snapshot as pts

    class SVG(pts.SVGImageExtension):
        @classmethod
        def dirname(cls, *, test_location) -> str:
            return str(Path(test_location.filepath).parent / "snapshots" / test_location.basename)

    monkeypatch.setattr(pts, "SVGImageExtension", SVG)
    monkeypatch.setattr(ReplayApp, "result_row", staticmethod(frozen_row))


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=["80x24", "200x60"])
def test_main_screen_snapshot(tui_snapshots, snap_compare, store, tmp_path, size, one_thread):
    app = make_app(store, tmp_path)

    async def two_steps(pilot):
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.press("n")
        await settle(pilot, app, until=lambda: app.steps_done >= 2)
        # the run's own timings are machine-dependent: the table and charts show the frozen ones
        assert all(r["eval_s"] == 0.01 for r in app.results)

    assert snap_compare(app, terminal_size=size, run_before=two_steps)



@pytest.mark.parametrize("top, count", [(0.0138, 3), (0.476, 5), (0.48, 2), (0.48, 1), (1.0, 2), (0.00023, 3),
                                        (1234.0, 4), (37.0, 8)])
def test_chart_y_ticks_are_round_distinct_and_in_range(top, count):
    """plotext's own ticks repeated labels on small ranges ("0.01 0.01 0.01" on an 80x24 timing chart)."""
    ticks, labels = y_ticks(top, count)
    assert ticks[0] == 0 and ticks[-1] <= top and count + 1 <= len(ticks) <= 2.5 * count + 1
    assert len(set(labels)) == len(labels)
    assert all(abs(float(label) - t) < 1e-12 + 1e-9 * t for label, t in zip(labels, ticks))


async def test_with_a_method_paused_to_the_end_the_status_says_what_is_left(store, tmp_path):
    """Before, the status read 'n retrains on period 7, scores 8' past the last period, and n did nothing."""
    app = make_app(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        app.hidden = {"fine"}
        app.replay.engine.paused = {"fine"}
        await pilot.press("a")
        await settle(pilot, app, until=lambda: app.goal is None and not app.busy
                     and app.replay.engine.next_step > app.replay.engine.last_step)
        await pilot.pause()
        activity = app.query_one("#activity").text
        assert "the shown methods are scored to the end; fine is paused: m resumes" in activity, activity
        done = app.steps_done
        await pilot.press("n")
        await pilot.pause()
        assert app.steps_done == done and not app.busy
        await pilot.press("q")


async def test_a_tiny_terminal_keeps_the_table_rows_and_drops_the_charts(store, tmp_path):
    """At 60x15 the charts (8 rows at least) left the table only its header row."""
    app = make_app(store, tmp_path)
    async with app.run_test(size=(60, 15)) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        await pilot.pause()
        assert not app.query_one("#charts").display
        table = app.query_one(ResultsTable)
        assert table.region.height >= 1 + len(app.view.methods), table.region  # header + one row per method
        await pilot.resize_terminal(100, 32)
        await pilot.pause()
        assert app.query_one("#charts").display
        await pilot.press("q")


async def test_a_small_terminal_shows_every_method_row_and_the_status_line(store, tmp_path):
    """At 80x24 with eight methods the table was capped at seven rows, and a long source path
    wrapped the header onto a third line, which pushed the status line under the footer."""
    config = tiny_config(("full", "fine", "spmf", "pop", "random", "fresh", "pop-a", "pop-b"))
    config.method_params.update({"pop-a": {"kind": "pop"}, "pop-b": {"kind": "pop"}})
    app = make_app(store, tmp_path, config=config)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app, until=lambda: app.steps_done >= 1)
        app.view.source = "csv (/a/rather/long/folder/name/that/goes/on/and/on/for/a/while/interactions.csv)"
        app.update_status()
        await pilot.pause()
        await pilot.pause()
        screen = app.screen.region
        header, table = app.query_one("#header"), app.query_one(ResultsTable)
        activity, footer = app.query_one("#activity"), app.query_one("Footer")
        assert header.region.height == 2
        assert table.region.height >= 1 + len(config.methods), table.region  # header + every row
        assert screen.contains_region(table.region)
        assert screen.contains_region(activity.region) and activity.region.bottom <= footer.region.y
        assert app.query_one("#charts").display  # what is left is still a readable chart here
        chart = app.query_one("#metric-chart", PeriodChart)
        legend = chart.legend()  # as it is set as the border title
        assert all(m in legend.plain.split() for m in config.methods), legend.plain  # every method named
        assert legend.cell_len <= chart.size.width - 4
        await pilot.press("q")


async def test_f_on_a_small_catalogue_says_why_the_numbers_barely_move(store, tmp_path, monkeypatch):
    """With fewer than 1,000 items the sampled ranking already holds (almost) every item: f changed
    the header and no number, and the reason was only in the log's first lines."""
    app = make_app(store, tmp_path, auto_first_step=False)
    toasts = []
    monkeypatch.setattr(app, "notify", lambda message, *a, **kw: toasts.append(message))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert app.dataset is None and app.replay.dataset.n_items < 1000
        await pilot.press("f")
        await pilot.pause()
        assert toasts and toasts[-1].startswith(f"only {app.replay.dataset.n_items} items: the sampled ranking")
        await pilot.press("q")


async def test_the_layout_is_fitted_again_when_a_resize_crosses_the_wide_breakpoint(store, tmp_path):
    """The log is 12 rows beside the table on a wide terminal, 3-4 under it on a narrow one; the
    layout was fitted with the old height until the next key: charts hidden with the room empty, or
    shown 4 rows high."""
    app = make_app(store, tmp_path, auto_first_step=False)
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot, app)
        charts = app.query_one("#charts")
        await pilot.resize_terminal(100, 22)
        await pilot.pause(0.2)
        await pilot.pause()
        assert charts.display and charts.region.height >= tui_app.MIN_CHART_ROWS
        await pilot.resize_terminal(200, 20)  # wide and short: the 12-row log leaves 4 rows
        await pilot.pause(0.2)
        await pilot.pause()
        assert not charts.display
        assert app.screen.region.contains_region(app.query_one("#activity").region)
        await pilot.press("q")


async def test_a_log_line_wrapped_at_one_width_loses_no_word_at_another(store, tmp_path):
    """RichLog wraps once, when a line is written: after a resize, lines were cut mid-word."""
    app = make_app(store, tmp_path, auto_first_step=False)
    words = [f"word{i}" for i in range(40)]
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot, app)
        app.log_line(" ".join(words))
        await pilot.pause()
        log = app.query_one("#log")
        for width in (60, 160, 100):
            await pilot.resize_terminal(width, 30)
            await pilot.pause(LogPanel.REWRAP_DELAY + 0.1)  # once the size has settled
            await pilot.pause()
            room = log.scrollable_content_region.width
            assert all(len(line.text.rstrip()) <= room for line in log.lines), width  # nothing cut off
            shown = log_text(app).split()
            assert all(w in shown for w in words), (width, shown)
        await pilot.press("q")


def test_every_method_colour_is_distinct_and_outside_the_themed_sixteen():
    """Textual re-maps colours 0-15 through its theme, which drew bright red and bright magenta alike."""
    from app.tui.model import PALETTE

    assert len(set(PALETTE)) == len(PALETTE) and min(PALETTE) >= 16


async def test_the_header_and_log_say_when_smls_kernel_is_being_built(store, tmp_path, monkeypatch):
    """The first SML run on a machine compiles a kernel for ~30 s during preparation: the header
    says so (not "pre-training..."), and the log says how long it took."""
    from app.tui.widgets import ReplayHeader
    from sml_sim.models import fused

    built = fused.kernel()
    if built is None:
        pytest.skip(f"no fused kernel here: {fused.status()}")
    release = threading.Event()

    def slow_build():
        release.wait(20)
        return built

    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_failure", None)
    monkeypatch.setattr(fused, "_build", slow_build)
    monkeypatch.setattr(fused, "needs_build", lambda: fused._module is None)
    config = tiny_config(("sml", "pop"))
    config.method_params["sml"] = {"outer_iters": 1, "fc_size": 8}
    app = make_app(store, tmp_path, config=config)
    async with app.run_test(size=(120, 36)) as pilot:
        deadline = time.monotonic() + 30
        while not app.building_kernel and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert app.building_kernel
        assert "building SML's kernel..." in app.query_one(ReplayHeader).content.plain
        release.set()
        await settle(pilot, app, until=lambda: app.phase == "ready")
        assert not app.building_kernel
        assert "built SML's fused CPU kernel in" in log_text(app)
        await pilot.press("q")
