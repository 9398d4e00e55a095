"""The replay engine: no look-ahead, determinism, resume equals an uninterrupted run (in-process
crashes at several points and a real kill -9), failure isolation and in-sample marking."""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import threading
import time

import numpy as np
import pytest
import torch

from db.replay import Replay
from db.store import Store
from sml_sim.config import RunConfig, load_scenario
from sml_sim.data import DatasetSpec
from sml_sim.data.base import Dataset, Split
from sml_sim.engine import MethodResult, MethodSpec, MethodStarted, Progress, ReplayEngine
from sml_sim.retrainers import METHODS, register
from sml_sim.retrainers.base import Cancelled, Retrainer
from tests.conftest import interrupted_run

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = ["full", "fine", "spmf", "pop", "random", "fresh"]
PARAMS = {"full": {"epochs": 1}, "fine": {"epochs": 1}, "spmf": {"epochs": 1, "reservoir": 300}}
PRETRAIN = {"epochs": 1, "dim": 8}
TIMING = {"retrain_s", "eval_s"}


def _specs(methods):
    return [MethodSpec(m, dict(PARAMS.get(m, {}))) for m in methods]


def _run_engine(ds, methods=ALL, seed=0, checkpoint_dir=None):
    eng = ReplayEngine(ds, _specs(methods), seed=seed, device="cpu", pretrain=PRETRAIN,
                       checkpoint_dir=checkpoint_dir)
    out = {}
    eng.subscribe(lambda e: out.__setitem__((e.method, e.period), e) if isinstance(e, MethodResult) else None)
    eng.run()
    return out


def _truncate(ds: Dataset, last: int, split_counts) -> Dataset:
    """The dataset as it would be read if the stream ended after period ``last``."""
    hi = int(ds.offsets[last + 1])
    return Dataset(name=ds.name, source=ds.source, is_synthetic=ds.is_synthetic, params=ds.params,
                   users=ds.users[:hi].copy(), items=ds.items[:hi].copy(), times=ds.times[:hi].copy(),
                   periods=ds.periods[:hi].copy(), n_users=int(ds.users[:hi].max()) + 1,
                   n_items=int(ds.items[:hi].max()) + 1,
                   split=Split.from_counts(last + 1, *split_counts, ds.split.retrain_start))


# ------------------------------------------------------------------ no look-ahead


@pytest.fixture(scope="module")
def lookahead_runs(toy_stream):
    from sml_sim.data.base import RawStream, build_dataset
    from sml_sim.data.protocols import equal_count_cut

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # new users and items keep arriving until the end, as in a real stream
        users, items, times = toy_stream(n=2400, n_users=70, n_items=100, seed=4, late_newcomers=500)
        ds = build_dataset(RawStream(users, items, times), name="la", source="la", is_synthetic=True, params={},
                           min_user=1, min_item=1, cut=equal_count_cut(10),
                           split_for=lambda n: Split.from_counts(n, 5, 1, 4, 2))
        whole = _run_engine(ds)
        cuts = {last: _run_engine(_truncate(ds, last, (5, 1, last - 5))) for last in (6, 8)}
    finally:
        torch.set_num_threads(before)
    return ds, whole, cuts


def test_truncated_stream_has_fewer_users_and_items(lookahead_runs):
    ds, _, _ = lookahead_runs
    t6 = _truncate(ds, 6, (5, 1, 1))
    assert t6.n_users < ds.n_users and t6.n_items < ds.n_items


@pytest.mark.parametrize("method", ALL)
def test_no_look_ahead(lookahead_runs, method):
    """Scores on period t must not depend on anything after t: cutting the stream after a period
    leaves every rank on the periods still present unchanged."""
    ds, whole, cuts = lookahead_runs
    mismatches = []
    for last, part in cuts.items():
        periods = sorted(p for (m, p) in part if m == method)
        assert periods == list(range(ds.split.retrain_start + 1, last + 1))
        for p in periods:
            a, b = whole[(method, p)], part[(method, p)]
            assert a.status == b.status == "ok"
            if not (np.array_equal(a.sampled_rank, b.sampled_rank) and np.array_equal(a.full_rank, b.full_rank)):
                mismatches.append(f"cut after {last}, period {p}: recall@20 {a.metrics['recall@20']:.4f} "
                                  f"(whole) vs {b.metrics['recall@20']:.4f} (cut)")
            else:
                assert a.metrics == b.metrics
                assert np.array_equal(a.n_candidates, b.n_candidates)
    assert not mismatches, f"{method} scores depend on data after the scored period:\n" + "\n".join(mismatches)


SCORED_PERIOD_METHODS = {
    **{m: PARAMS.get(m, {}) for m in ALL},
    "sml": {"outer_iters": 2, "fc_size": 16, "batch_w_hat": 64, "batch_theta": 32},
    "gru4rec": {"hidden": 8, "emb_dim": 8, "max_len": 4, "epochs": 1, "pretrain_epochs": 1, "batch_size": 64},
    "caser": {"d": 8, "L": 3, "T": 2, "n_v": 2, "n_h": 2, "epochs": 1, "pretrain_epochs": 1, "batch_size": 64},
}


def _flat_state(state, prefix=""):
    """Every tensor and array of a (nested) state dict, by path."""
    if isinstance(state, dict):
        out = {}
        for k, v in state.items():
            out.update(_flat_state(v, f"{prefix}/{k}"))
        return out
    if isinstance(state, torch.Tensor | np.ndarray):
        return {prefix: np.asarray(state.detach().cpu() if isinstance(state, torch.Tensor) else state)}
    return {prefix: state}


def test_model_that_scores_a_period_has_not_seen_it(toy_stream):
    """Rewire the interactions of one test period (its old-item cases get other old items): every
    method's state after training up to the period before, which then scores it, must not change. The
    cut tests above show no dependence on later periods; this test and the next cover the scored period
    itself (a method could read it through the dataset it is handed): this one catches a use of the
    old items' counts there by any route, the next any request for that period."""
    from sml_sim.data.base import RawStream, build_dataset
    from sml_sim.data.protocols import equal_count_cut

    users, items, times = toy_stream(n=1500, n_users=60, n_items=80, seed=6, late_newcomers=200)

    def dataset(items):
        return build_dataset(RawStream(users, items, times), name="s", source="s", is_synthetic=True, params={},
                             min_user=1, min_item=1, cut=equal_count_cut(8),
                             split_for=lambda n: Split.from_counts(n, 4, 1, 3, 2))

    ds = dataset(items)
    target = ds.split.test[0] + 1
    lo, hi = int(ds.offsets[target]), int(ds.offsets[target + 1])
    order = np.argsort(times, kind="stable")  # the dataset's rows are the raw rows in time order
    seen_before = np.isin(ds.items[lo:hi], ds.items[:lo])
    rows = order[lo:hi][seen_before]
    rewired = items.copy()
    rewired[rows] = np.random.default_rng(1).choice(items[order[:lo]], size=len(rows))  # other old items
    other = dataset(rewired)
    assert np.array_equal(other.items[:lo], ds.items[:lo]) and other.n_items == ds.n_items
    assert not np.array_equal(other.items[lo:hi], ds.items[lo:hi])

    states = []
    for d in (ds, other):
        eng = ReplayEngine(d, [MethodSpec(m, dict(p)) for m, p in SCORED_PERIOD_METHODS.items()], seed=0,
                           device="cpu", pretrain=PRETRAIN)
        eng.run(until=target - 1)  # trained on target - 1, then scored on target
        assert eng.committed == {m: target for m in SCORED_PERIOD_METHODS}
        states.append({m: _flat_state(r.state_dict()) for m, r in eng.retrainers.items()})
    for method, state in states[0].items():
        other_state = states[1][method]
        assert state.keys() == other_state.keys()
        changed = [k for k in state if not np.array_equal(np.asarray(state[k]), np.asarray(other_state[k]))]
        assert not changed, f"{method}'s model for period {target} depends on that period: {changed}"


def test_no_method_asks_for_a_period_it_may_not_see(monkeypatch, toy_stream):
    """While a method trains on period t it may ask for periods up to t, and t + 1 only when the engine
    hands it over (a training period, for SML's meta step). Every request a method can make of the
    dataset it is handed (a period, the history up to one, the users or items seen by one) is checked."""
    from sml_sim.data.base import RawStream, build_dataset
    from sml_sim.data.protocols import equal_count_cut
    from sml_sim.retrainers.base import ReplayContext

    users, items, times = toy_stream(n=1500, n_users=60, n_items=80, seed=6, late_newcomers=200)
    ds = build_dataset(RawStream(users, items, times), name="h", source="h", is_synthetic=True, params={},
                       min_user=1, min_item=1, cut=equal_count_cut(8),
                       split_for=lambda n: Split.from_counts(n, 4, 1, 3, 2))
    limit: dict = {"now": None, "method": None}
    asked_beyond = []

    def guarded(original, what):
        def call(self, t, *args, **kw):
            if limit["now"] is not None and t > limit["now"]:
                asked_beyond.append(f"{limit['method']} asked for {what}({t}) while allowed up to {limit['now']}")
            return original(self, t, *args, **kw)
        return call

    for owner, name in ((Dataset, "period"), (Dataset, "upto"), (ReplayContext, "n_items_seen"),
                        (ReplayContext, "n_users_seen")):
        monkeypatch.setattr(owner, name, guarded(getattr(owner, name), name))
    eng = ReplayEngine(ds, [MethodSpec(m, dict(p)) for m, p in SCORED_PERIOD_METHODS.items()], seed=0,
                       device="cpu", pretrain=PRETRAIN)

    def watch(name, fit):
        def fit_period(t, next_period=None):
            limit.update(now=t + (next_period is not None), method=name)
            try:
                return fit(t, next_period)
            finally:
                limit.update(now=None, method=None)
        return fit_period

    for name, r in eng.retrainers.items():
        r.fit_period = watch(name, r.fit_period)
    eng.run()
    assert eng.finished and not eng.failed
    assert not asked_beyond, "\n".join(sorted(set(asked_beyond)))


def test_cases_do_not_depend_on_later_periods(lookahead_runs):
    ds, whole, cuts = lookahead_runs
    for part in cuts.values():
        for (m, p), r in part.items():
            w = whole[(m, p)].cases
            assert np.array_equal(w.negatives, r.cases.negatives)
            assert np.array_equal(w.tie_break, r.cases.tie_break)
            assert np.array_equal(w.new_user, r.cases.new_user)


# ------------------------------------------------------------------ runs through the store


def _config(tiny_scenario, **kw) -> RunConfig:
    return load_scenario(tiny_scenario(**kw))


def _snapshot(store: Store, run_id: int):
    """Everything a run produced except timings."""
    rows = {}
    for r in store.results(run_id):
        rows[(r["method"], r["period"])] = {k: v for k, v in r.items() if k not in TIMING}
    ranks = {}
    for c in store.case_ranks(run_id):
        ranks[(c["method"], c["period"])] = {k: np.asarray(v).tolist() for k, v in c.items()
                                             if k not in ("method", "period")}
    return rows, ranks


@pytest.fixture
def baseline(tiny_scenario, tmp_path):
    cfg = _config(tiny_scenario)
    store = Store(f"sqlite:///{tmp_path}/baseline.db")
    rp = Replay.new(store, cfg)
    rp.run()
    assert store.run(rp.run_id).status == "finished"
    return cfg, _snapshot(store, rp.run_id)


def _assert_same(snap, expected):
    rows, ranks = snap
    exp_rows, exp_ranks = expected
    assert sorted(rows) == sorted(exp_rows)
    for key in exp_rows:
        assert rows[key] == exp_rows[key], key
    assert sorted(ranks) == sorted(exp_ranks)
    for key in exp_ranks:
        assert ranks[key] == exp_ranks[key], key


def test_determinism_same_seed_same_results_and_csv(baseline, tmp_path):
    from sml_sim import report

    cfg, expected = baseline
    store = Store(f"sqlite:///{tmp_path}/again.db")
    rp = Replay.new(store, RunConfig.from_dict(cfg.as_dict()))
    rp.run()
    _assert_same(_snapshot(store, rp.run_id), expected)
    # the CSV too, timings aside
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    info = store.run(rp.run_id)
    report.write_results_csv(a, report.ExportMeta(1, info.dataset, info.source, info.scenario, info.seed), store.results(rp.run_id))
    store0 = Store(f"sqlite:///{tmp_path}/baseline.db")
    report.write_results_csv(b, report.ExportMeta(1, info.dataset, info.source, info.scenario, info.seed), store0.results(1))
    assert _csv_without_timings(a) == _csv_without_timings(b)


def test_different_seed_differs(baseline, tmp_path):
    cfg, expected = baseline
    d = cfg.as_dict()
    d["seed"] = 1
    store = Store(f"sqlite:///{tmp_path}/seed1.db")
    rp = Replay.new(store, RunConfig.from_dict(d))
    rp.run()
    rows, _ = _snapshot(store, rp.run_id)
    assert any(rows[k]["metrics"] != expected[0][k]["metrics"] for k in expected[0])


def _resume_to_end(store, run_id):
    rp = Replay.resume(store, run_id)
    rp.run()
    assert store.run(run_id).status == "finished"
    return _snapshot(store, run_id)


def test_resume_after_stopping_between_steps(baseline, tmp_path):
    cfg, expected = baseline
    store = Store(f"sqlite:///{tmp_path}/stop.db")
    rp = Replay.new(store, cfg)
    rp.engine.run(until=rp.engine.first_step + 1)  # two steps, then the process "dies"
    rp.interrupted()
    assert store.run(rp.run_id).last_period == rp.engine.first_step + 2
    del rp
    _assert_same(_resume_to_end(store, 1), expected)


def test_resume_after_cancel_mid_step(baseline, tmp_path):
    cfg, expected = baseline
    store = Store(f"sqlite:///{tmp_path}/cancel.db")
    cancel = threading.Event()
    rp = Replay.new(store, cfg, cancel=cancel)
    step = rp.engine.first_step + 2  # retrained on this period, scored on the next

    def on_event(e):
        if isinstance(e, MethodStarted) and e.period == step and e.method == "spmf":
            cancel.set()

    rp.engine.subscribe(on_event)
    with pytest.raises(Cancelled):
        rp.run()
    rp.interrupted()
    committed = store.committed(rp.run_id)
    assert committed["full"] == committed["fine"] == step + 1  # done before the cancel
    assert committed["spmf"] == step  # the cancelled step left nothing
    assert "pop" not in committed or committed["pop"] == step
    _assert_same(_resume_to_end(store, rp.run_id), expected)


class _Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["after checkpoint, before commit", "after commit, before bookkeeping",
                                   "during pre-training"])
def test_resume_after_crash(baseline, tmp_path, where):
    cfg, expected = baseline
    store = Store(f"sqlite:///{tmp_path}/crash.db")
    rp = Replay.new(store, cfg)
    target = rp.engine.first_step + 2

    def crash_on_result(e):
        if isinstance(e, MethodResult) and e.method == "fine" and e.period == target:
            raise _Crash(where)

    def crash_in_pretrain(e):
        if isinstance(e, Progress) and e.task == "pretrain" and e.fraction > 0.5:
            raise _Crash(where)

    if where == "after checkpoint, before commit":
        rp.engine.listeners.insert(0, crash_on_result)  # before the store's listener
    elif where == "after commit, before bookkeeping":
        rp.engine.subscribe(crash_on_result)  # after the store's listener
    else:
        rp.engine.subscribe(crash_in_pretrain)
    with pytest.raises(_Crash):
        rp.run()
    rp.interrupted(f"crash {where}")
    assert store.run(rp.run_id).status == "failed"
    _assert_same(_resume_to_end(store, rp.run_id), expected)


def test_resume_twice(baseline, tmp_path):
    cfg, expected = baseline
    store = Store(f"sqlite:///{tmp_path}/twice.db")
    rp = Replay.new(store, cfg)
    rp.engine.run(until=rp.engine.first_step)
    rp = Replay.resume(store, rp.run_id)
    rp.engine.run(until=rp.engine.first_step + 2)
    _assert_same(_resume_to_end(store, rp.run_id), expected)


def _csv_without_timings(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _committed_results(db_file) -> int:
    try:
        con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_kill_9_then_resume_equals_uninterrupted(sml_sim, cli, tiny_scenario, tmp_path):
    """A real `sml-sim run` process killed with SIGKILL once it has committed results, resumed with
    `sml-sim run --resume ID` (in-process, to save an interpreter start), exports exactly the CSV of an uninterrupted run (timings aside)."""
    toml = tiny_scenario(periods=8, split="5/1/2", full_epochs=15, n=2500)
    # full trains on everything so far for 15 epochs in small batches: slow enough to be killed mid-run
    text = toml.read_text().replace("[methods.full]\nepochs = 15\n", "[methods.full]\nepochs = 15\nbatch_size = 64\n")
    toml.write_text(text)
    base_db, kill_db = tmp_path / "base.db", tmp_path / "kill.db"
    base = sml_sim("run", toml, "--db", f"sqlite:///{base_db}", "--threads", "1", "--out", tmp_path / "base.csv",
                   popen=True)
    try:
        victim = sml_sim("run", toml, "--db", f"sqlite:///{kill_db}", "--threads", "1", popen=True)
        try:
            deadline = time.monotonic() + 90
            while _committed_results(kill_db) < 2 and victim.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
        finally:
            if victim.poll() is None:
                victim.kill()
        assert victim.returncode == -signal.SIGKILL, (
            f"the run ended (rc {victim.returncode}) before it could be killed: {victim.stderr.read()[-500:]}")
        partial = _committed_results(kill_db)
        assert 2 <= partial < 5 * 5, partial
        r = cli("runs", "--db", f"sqlite:///{kill_db}", "--json")
        assert r.exit_code == 0, r.stderr
        [info] = json.loads(r.stdout)
        # Killed, it could not mark itself; the store sees that its process is gone.
        assert info["status"] == "interrupted"
        resumed = cli("run", "--resume", info["run_id"], "--db", f"sqlite:///{kill_db}", "--threads", "1",
                      "--out", tmp_path / "resumed.csv")
        assert resumed.exit_code == 0, resumed.stderr
        assert f"resuming run {info['run_id']}" in resumed.stdout
        out, err = base.communicate(timeout=120)
        assert base.returncode == 0, err
    finally:
        if base.poll() is None:
            base.kill()
            base.wait()
    a, b = _csv_without_timings(tmp_path / "base.csv"), _csv_without_timings(tmp_path / "resumed.csv")
    assert len(a) == 5 * 5
    assert a == b


def test_ctrl_c_pressed_many_times_stops_cleanly_once(sml_sim, tiny_scenario, tmp_path):
    """Presses a few milliseconds apart broke the cleanup: a traceback from an atexit callback, and the
    process killed by the signal (exit -2) instead of exit 130 with the resume hint."""
    toml = tiny_scenario(periods=8, split="5/1/2", full_epochs=15, n=2500)
    toml.write_text(toml.read_text().replace("[methods.full]\nepochs = 15\n",
                                             "[methods.full]\nepochs = 15\nbatch_size = 64\n"))
    db = tmp_path / "ctrl-c.db"
    victim = sml_sim("run", toml, "--db", f"sqlite:///{db}", "--threads", "1", popen=True)
    try:
        deadline = time.monotonic() + 90
        while _committed_results(db) < 2 and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(5):
            victim.send_signal(signal.SIGINT)
            time.sleep(0.003)
        _, err = victim.communicate(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert victim.returncode == 130, (victim.returncode, err[-800:])
    assert "Traceback" not in err and "continue with `sml-sim run --resume 1" in err, err[-800:]
    assert Store(f"sqlite:///{db}").run(1).status == "interrupted"


# ------------------------------------------------------------------ failure isolation and in-sample marking


class _Broken(Retrainer):
    kind = "broken"

    def fit_period(self, t, next_period=None):
        if t == self.ctx.dataset.split.retrain_start + 1:
            raise RuntimeError("boom\nwith a second line")
        return {}

    def score(self, cases, rows, n_items):
        return torch.zeros(len(rows), n_items)


class _NaNScorer(Retrainer):
    kind = "nanscore"

    def fit_period(self, t, next_period=None):
        return {}

    def score(self, cases, rows, n_items):
        return torch.full((len(rows), n_items), float("nan"))


class _Peeker(Retrainer):
    """Records which next period it was handed (as SML's meta step would use it)."""

    kind = "peek"
    uses_next_period = True
    seen: list = []

    def fit_period(self, t, next_period=None):
        type(self).seen.append((t, None if next_period is None else next_period.index,
                                None if next_period is None else (next_period.users.copy(), next_period.items.copy())))
        return {}

    def score(self, cases, rows, n_items):
        return torch.zeros(len(rows), n_items)


@pytest.fixture
def test_methods():
    names = {"broken": _Broken, "nanscore": _NaNScorer, "peek": _Peeker}
    for name, cls in names.items():
        register(name, cls, {}, f"test method {name}")
    _Peeker.seen = []
    yield
    for name in names:
        METHODS.pop(name, None)


def test_failing_method_is_isolated(test_methods, tiny_scenario, tmp_path):
    cfg = _config(tiny_scenario, methods=("broken", "nanscore", "pop", "fine"))
    store = Store(f"sqlite:///{tmp_path}/fail.db")
    rp = Replay.new(store, cfg)
    rp.run()
    start, last = rp.dataset.split.retrain_start, rp.dataset.n_periods - 1
    results = {(r["method"], r["period"]): r for r in store.results(rp.run_id)}
    broken = sorted(p for m, p in results if m == "broken")
    assert broken == [start + 1, start + 2]  # ok once, then failed, then nothing more
    assert results[("broken", start + 1)]["status"] == "ok"
    failed = results[("broken", start + 2)]
    assert failed["status"] == "failed"
    assert "boom" in failed["error"] and "\n" not in failed["error"]
    assert results[("nanscore", start + 1)]["status"] == "failed"
    assert "ScoringError" in results[("nanscore", start + 1)]["error"]
    assert sorted(p for m, p in results if m == "nanscore") == [start + 1]
    for m in ("pop", "fine"):
        assert sorted(p for mm, p in results if mm == m) == list(range(start + 1, last + 1))
        assert all(results[(m, p)]["status"] == "ok" for p in range(start + 1, last + 1))
    assert store.run(rp.run_id).status == "finished"
    assert store.committed(rp.run_id)["pop"] == last
    # a resumed run does not retry the failed methods
    rp2 = Replay.resume(store, rp.run_id)
    assert rp2.engine.finished and {"broken", "nanscore"} <= rp2.engine.failed


def test_last_period_of_a_run_ignores_failed_methods(test_methods, tiny_scenario, tmp_path, cli):
    """`runs` shows the last committed period; a method that failed early must not hold it back
    once every live method has committed the final period."""
    cfg = _config(tiny_scenario, methods=("broken", "pop"))
    db = f"sqlite:///{tmp_path}/lp.db"
    store = Store(db)
    rp = Replay.new(store, cfg)
    rp.run()
    last = rp.dataset.n_periods - 1
    assert store.committed(rp.run_id)["pop"] == last
    r = cli("runs", "--db", db, "--json")
    [info] = json.loads(r.stdout)
    assert info["status"] == "finished"
    assert info["last_period"] == last, info


def test_in_sample_marked_only_in_training_periods(test_methods, make_dataset):
    ds = make_dataset(n=1500, periods=10, split=(6, 2, 2), retrain_start=2)
    out = _run_engine(ds, methods=["peek", "pop"])
    train_end = ds.split.train[1]
    for (m, p), r in out.items():
        if m == "peek":
            assert r.in_sample == (p <= train_end), (p, r.split, r.in_sample)
            if r.split in ("validation", "test"):
                assert not r.in_sample
        else:
            assert not r.in_sample
    # it saw D_{t+1} only when t+1 is a training period, and exactly that period's data
    for t, idx, data in _Peeker.seen:
        if t + 1 <= train_end:
            assert idx == t + 1
            assert np.array_equal(data[0], ds.period(t + 1).users)
            assert np.array_equal(data[1], ds.period(t + 1).items)
        else:
            assert idx is None, f"period {t + 1} ({ds.split.split_of(t + 1)}) was shown before it was scored"
    assert [t for t, _, _ in _Peeker.seen] == list(range(2, 9))


def test_in_sample_rows_stay_out_of_split_means():
    from sml_sim import report

    base = {"status": "ok", "metrics": {k: 0.5 for k in report.METRIC_KEYS}, "retrain_s": 0.0, "n_cases": 10}
    rows = [
        {**base, "method": "a", "period": 5, "split": "train", "in_sample": True},
        {**base, "method": "a", "period": 6, "split": "test", "in_sample": False},
        {**base, "method": "a", "period": 7, "split": "test", "in_sample": True,
         "metrics": {k: 1.0 for k in report.METRIC_KEYS}},
        {**base, "method": "a", "period": 8, "split": "test", "in_sample": False, "status": "failed",
         "metrics": {}},
        # a period without test cases has nothing to average (its metrics are NaN)
        {**base, "method": "a", "period": 9, "split": "test", "in_sample": False, "n_cases": 0,
         "metrics": {k: float("nan") for k in report.METRIC_KEYS}},
    ]
    means = report.split_means(rows, "test")
    assert means["a"]["periods"] == 1 and means["a"]["recall@20"] == 0.5


def test_engine_emits_periods_in_order_and_stores_them(tiny_scenario, tmp_path):
    cfg = _config(tiny_scenario, methods=("pop",))
    store = Store(f"sqlite:///{tmp_path}/p.db")
    rp = Replay.new(store, cfg)
    rp.engine.run(until=rp.engine.first_step)
    # periods up to the first evaluated one are stored, nothing later (the clock has not reached them)
    assert store.stored_periods(rp.dataset_id) == set(range(rp.engine.first_step + 2))
    rp.run()
    assert store.stored_periods(rp.dataset_id) == set(range(rp.dataset.n_periods))
    assert store.interaction_count(rp.dataset_id) == len(rp.dataset.users)


def test_dataset_spec_roundtrip():
    spec = DatasetSpec(protocol="csv", data="x.csv", periods=8, split="5/1/2", retrain_start=2,
                       csv={"user_col": "u"})
    assert DatasetSpec.from_dict(spec.as_dict()) == spec
    cfg = RunConfig(scenario="s", dataset=spec, methods=["pop"], method_params={"pop": {}}, seed=3)
    assert RunConfig.from_dict(cfg.as_dict()).as_dict() == cfg.as_dict()



def test_mf_methods_start_from_the_same_initial_model(make_dataset):
    ds = make_dataset(n=1200, periods=6, split=(3, 1, 2), retrain_start=2)
    eng = ReplayEngine(ds, _specs(["full", "fine", "spmf"]), seed=0, device="cpu", pretrain=PRETRAIN)
    eng.prepare()
    models = [eng.retrainers[m].model for m in ("full", "fine", "spmf")]
    for m in models[1:]:
        assert torch.equal(m.P, models[0].P) and torch.equal(m.Q, models[0].Q)
        assert m.P.data_ptr() != models[0].P.data_ptr()  # copies, not one shared table
    # the initial model was trained (it is not the raw initialisation)
    from sml_sim.models.mf import MF

    raw = MF(ds.n_users, ds.n_items, 8, 0.1, generator=eng.ctx.generator("init-mf"))
    assert not torch.equal(raw.P, models[0].P)


def test_resume_refuses_a_changed_dataset(cli, tiny_scenario, tmp_path, one_line_error):
    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{tmp_path}/chg.db"
    store = Store(db)
    rp = interrupted_run(store, toml)
    data = tmp_path / "tiny.csv"
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:-50]) + "\n")  # the file changed on disk (size and content)
    r = cli("run", "--resume", rp.run_id, "--db", db)
    one_line_error(r, 2, contains="changed")


def test_resume_of_a_run_whose_data_file_moved_says_where_to_put_it(cli, tiny_scenario, tmp_path, one_line_error):
    """It said only 'no CSV file at ...', and --data with the new place is refused as a new setting."""
    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{tmp_path}/moved.db"
    rp = interrupted_run(Store(db), toml)
    (tmp_path / "tiny.csv").rename(tmp_path / "elsewhere.csv")
    line = one_line_error(cli("run", "--resume", rp.run_id, "--db", db), 2)
    assert f"reads its data from {tmp_path / 'tiny.csv'}, which is not there now: put the file back" in line
    assert Store(db).run(rp.run_id).status == "interrupted"


def test_resume_accepts_the_same_data_copied_again(cli, tiny_scenario, tmp_path):
    """A file copied over with the same bytes (a new modification time) is the same data: the run continues."""
    import os

    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{tmp_path}/same.db"
    store = Store(db)
    rp = interrupted_run(store, toml)
    data = tmp_path / "tiny.csv"
    data.write_bytes(data.read_bytes())
    os.utime(data, (1_000_000_000, 1_000_000_000))
    r = cli("run", "--resume", rp.run_id, "--db", db, "--threads", "1")
    assert r.exit_code == 0, r.stderr
    assert store.run(rp.run_id).status == "finished"
    assert store.data_unchanged(store.run(rp.run_id).dataset_id)  # its fingerprint follows the file now


def test_a_new_run_adds_the_raw_ids_an_older_store_lacks(tiny_scenario, tmp_path):
    """A store written before raw ids were kept has its periods but no ids: the next run on the same
    data fills them in for the stored periods."""
    from sqlalchemy import text

    toml = tiny_scenario(methods=("pop",))
    store = Store(f"sqlite:///{tmp_path}/raw.db")
    rp = interrupted_run(store, toml, steps=2)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM raw_ids"))
    assert store.raw_ids(rp.dataset_id) is None
    again = Replay.new(store, load_scenario(toml))
    assert again.dataset_id == rp.dataset_id
    users, items = store.raw_ids(rp.dataset_id)
    stored = max(store.stored_periods(rp.dataset_id))
    ends = rp.dataset.first_seen_ends
    assert users == rp.dataset.user_raw[:ends[0][stored]].tolist()
    assert items == rp.dataset.item_raw[:ends[1][stored]].tolist()


def test_resuming_a_finished_run_keeps_it_finished(cli, tiny_scenario, tmp_path):
    """`sml-sim run --resume ID` on a run that already finished has nothing to do: it must not crash
    on the checkpoints that finishing removed, nor mark the run failed."""
    toml = tiny_scenario(methods=("pop", "random"))
    db = f"sqlite:///{tmp_path}/fin.db"
    r = cli("run", toml, "--db", db, "--threads", "1")
    assert r.exit_code == 0, r.stderr
    store = Store(db)
    before = _snapshot(store, 1)
    assert store.run(1).status == "finished"
    r = cli("run", "--resume", "1", "--db", db, "--threads", "1")
    assert r.exit_code == 0, r.stderr
    assert store.run(1).status == "finished"
    assert _snapshot(store, 1) == before


def test_paused_method_is_skipped_and_catches_up(make_dataset):
    ds = make_dataset(n=1200, periods=6, split=(3, 1, 2), retrain_start=2)
    eng = ReplayEngine(ds, _specs(["pop", "random"]), seed=0, device="cpu", pretrain=PRETRAIN)
    eng.paused = {"random"}
    first = eng.step()
    assert [r.method for r in first] == ["pop"]
    assert eng.committed == {"pop": 3} and not eng.finished
    eng.paused = set()
    catch_up = eng.step()  # the clock goes back for the paused method alone
    assert [(r.method, r.period) for r in catch_up] == [("random", 3)]
    eng.run()
    assert eng.finished and eng.committed == {"pop": 5, "random": 5}


def test_a_damaged_checkpoint_is_one_line_and_leaves_the_run_interrupted(cli, tiny_scenario, tmp_path, one_line_error):
    """It gave 'internal error: ValueError: invalid literal ...' and marked the run failed."""
    toml = tiny_scenario(methods=("pop", "fine"))
    db = f"sqlite:///{tmp_path}/dmg.db"
    rp = interrupted_run(Store(db), toml, steps=2)
    from db.replay import checkpoint_root

    folder = checkpoint_root(Store(db)) / f"run-{rp.run_id}"
    damaged = sorted(folder.glob("fine.p*.pt"))[0]
    damaged.write_text("garbage\n")
    (folder / "_initial.pt").write_text("garbage\n")  # not read: every method has its own checkpoint
    line = one_line_error(cli("run", "--resume", rp.run_id, "--db", db), 2)
    assert f"run {rp.run_id} cannot continue: the checkpoint {damaged} cannot be read" in line, line
    assert Store(db).run(rp.run_id).status == "interrupted"


def test_a_run_held_by_another_machines_process_continues_only_with_force(cli, tiny_scenario, tmp_path,
                                                                        one_line_error):
    """Killed on another host, or in a container whose host name changed: it could never be resumed."""
    from sqlalchemy import text

    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{tmp_path}/away.db"
    rp = interrupted_run(Store(db), toml)
    with Store(db).engine.begin() as conn:
        conn.execute(text("UPDATE runs SET status = 'running', owner = 'deadnode:4242' WHERE id = :r"),
                     {"r": rp.run_id})
    line = one_line_error(cli("run", "--resume", rp.run_id, "--db", db), 2)
    assert f"`sml-sim run --resume {rp.run_id} --force --db {db}` continues it here" in line, line  # followable
    r = cli("run", "--resume", rp.run_id, "--db", db, "--force")
    assert r.exit_code == 0, r.stderr
    assert Store(db).run(rp.run_id).status == "finished"
    one_line_error(cli("run", toml, "--db", db, "--force"), 2, contains="--force goes with --resume")
