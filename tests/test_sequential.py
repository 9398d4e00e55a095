"""Sequential baselines (GRU4Rec, Caser): history gathering, training data, learning "after A comes B",
no look-ahead at scoring time, the replay engine end to end, checkpoints and resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from sml_sim.data.base import Dataset, Split, densify
from sml_sim.engine import MethodResult, MethodSpec, ReplayEngine
from sml_sim.evaluation import build_cases
from sml_sim.models.sequential import (
    GRU_BOS,
    GRU_PAD,
    GRU_SHIFT,
    UserIndex,
    caser_examples,
    gru_score_inputs,
    gru_windows,
)
from sml_sim.retrainers import METHODS, make_retrainer
from sml_sim.retrainers.base import ReplayContext

CPU = torch.device("cpu")
SMALL = {
    "gru4rec": {"hidden": 16, "emb_dim": 16, "max_len": 8, "negatives": 0, "epochs": 3, "pretrain_epochs": 3,
                "batch_size": 16, "lr": 0.01, "dropout": 0.0},
    "caser": {"d": 8, "L": 3, "T": 2, "n_v": 2, "n_h": 4, "epochs": 3, "pretrain_epochs": 3, "batch_size": 32,
              "lr": 0.01},
}
KINDS = ("gru4rec", "caser")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is faster, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_dataset(users, items, n_periods=10, split=(6, 2, 2), start=3, name="tiny") -> Dataset:
    """A Dataset from time-ordered interactions: ids densified in order of first appearance and the
    stream cut into equal-count periods."""
    users, n_users, _ = densify(np.asarray(users, dtype=np.int64))
    items, n_items, _ = densify(np.asarray(items, dtype=np.int64))
    n = len(users)
    periods = (np.arange(n) * n_periods // n).astype(np.int32)
    return Dataset(name=name, source="test", is_synthetic=True, params={}, users=users, items=items,
                   times=np.arange(n, dtype=np.int64), periods=periods, n_users=n_users, n_items=n_items,
                   split=Split.from_counts(n_periods, *split, start))


def cycle_dataset(n_users=12, n_items=6, steps=20, **kw) -> Dataset:
    """Every user walks the same cycle 0 -> 1 -> ... -> n_items-1 -> 0 from a different start, one
    step per round: after item A always comes item A + 1."""
    k = np.repeat(np.arange(steps), n_users)
    u = np.tile(np.arange(n_users), steps)
    return make_dataset(u, (u + k) % n_items, **kw)


def random_dataset(n=800, n_users=25, n_items=60, seed=0, **kw) -> Dataset:
    rng = np.random.default_rng(seed)
    return make_dataset(rng.integers(0, n_users, n), rng.integers(0, n_items, n), **kw)


def started(kind: str, ds: Dataset, seed=0, **params):
    r = make_retrainer(kind, {**SMALL[kind], **params})
    r.start(ReplayContext(ds, CPU, seed))
    return r


def all_scores(r, cases) -> torch.Tensor:
    return r.score(cases, np.arange(len(cases)), cases.n_universe)


# ---------------------------------------------------------------- data building


def test_registered():
    assert "gru4rec" in METHODS and "caser" in METHODS
    for kind in KINDS:
        assert METHODS[kind][0].needs_initial_mf is False


def brute_previous(users, p, n):
    prev = [q for q in range(p) if users[q] == users[p]]
    return prev[-n:], len(prev)


def test_user_index_previous_and_following_match_brute_force():
    rng = np.random.default_rng(3)
    users = rng.integers(0, 7, 200)
    index = UserIndex(users)
    positions = rng.permutation(200)[:80]
    prev, count = index.previous(positions, 4)
    follow = index.following(positions, 3)
    for row, p in enumerate(positions):
        expect, n_before = brute_previous(users, p, 4)
        assert count[row] == n_before
        assert list(prev[row]) == [-1] * (4 - len(expect)) + expect
        nxt = [q for q in range(p, 200) if users[q] == users[p]][:3]
        assert list(follow[row]) == nxt + [-1] * (3 - len(nxt))


def test_user_index_previous_before_a_given_position_matches_brute_force():
    rng = np.random.default_rng(4)
    users = rng.integers(0, 7, 200)
    index = UserIndex(users)
    positions = rng.permutation(200)[:80]
    before = np.array([rng.integers(0, p + 1) for p in positions])  # at or before the position
    prev, count = index.previous(positions, 4, before=before)
    for row, (p, b) in enumerate(zip(positions, before)):
        earlier = [q for q in range(b) if users[q] == users[p]]
        assert count[row] == len(earlier)
        assert list(prev[row]) == [-1] * (4 - len(earlier[-4:])) + earlier[-4:]


def test_gru_windows_cover_every_interaction_once_with_its_true_prefix():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 6, 150)
    items = rng.permutation(150)  # distinct items: a target identifies its place in the stream
    max_len = 7
    inputs, targets = gru_windows(users, items, max_len)
    assert inputs.shape == targets.shape and inputs.shape[1] == max_len
    # Every (user, k-th item) is a target exactly once, predicted from the items just before it.
    seen = set()
    seqs = {u: list(items[users == u]) for u in np.unique(users)}
    for inp, tgt in zip(inputs, targets):
        valid = tgt >= 0
        assert valid[0] and (np.diff(valid.astype(int)) <= 0).all()  # left-aligned
        assert (inp[~valid] == GRU_PAD).all()
        # the window's targets are a contiguous run of one user's items
        run = list(tgt[valid])
        u = users[items == run[0]][0]
        s = seqs[u].index(run[0])
        assert seqs[u][s:s + len(run)] == run
        for j, x in enumerate(inp[valid]):
            k = s + j  # index of the j-th target in seqs[u]
            assert (u, k) not in seen
            seen.add((u, k))
            assert x == (GRU_BOS if k == 0 else seqs[u][k - 1] + GRU_SHIFT)
            if j == 0 and k > 0:
                assert len(run) == max_len  # only the first window of a user is short
    assert len(seen) == 150


def test_gru_score_inputs_match_training_layout():
    hist = np.array([[-1, -1, 5, 6], [1, 2, 3, 4], [-1, -1, -1, -1]])
    tokens, slot = gru_score_inputs(hist, np.array([2, 9, 0]), 4)
    s = GRU_SHIFT
    assert tokens.tolist() == [[GRU_BOS, 5 + s, 6 + s, GRU_PAD], [1 + s, 2 + s, 3 + s, 4 + s],
                               [GRU_BOS, GRU_PAD, GRU_PAD, GRU_PAD]]
    assert slot.tolist() == [2, 3, 0]


def test_caser_examples_inputs_before_targets_from_the_position():
    users = np.array([0, 1, 0, 0, 1, 0, 0])
    items = np.array([10, 11, 12, 13, 14, 15, 16])
    index = UserIndex(users[:6])  # the prefix ends before position 6
    inputs, targets = caser_examples(index, items, np.array([3, 5, 1]), L=2, T=3)
    assert inputs.tolist() == [[11, 13], [13, 14], [0, 0]]  # item + 1, PAD = 0
    assert targets.tolist() == [[13, 15, -1], [15, -1, -1], [11, 14, -1]]


# ---------------------------------------------------------------- learning


@pytest.mark.parametrize("kind,params,top_k", [
    ("gru4rec", {"negatives": 0}, 1),
    ("gru4rec", {"negatives": 4}, 1),
    ("caser", {"T": 1}, 1),
    # With T = 2 targets Caser learns "A is followed by B and then C" as a set: B in its top 2.
    ("caser", {"T": 2}, 2),
])
def test_learns_after_a_comes_b(kind, params, top_k):
    ds = cycle_dataset()
    r = started(kind, ds, **{"pretrain_epochs": 60, "lr": 0.02, **params})
    r.fit_period(ds.split.retrain_start)
    cases = build_cases(ds, ds.split.retrain_start + 1, seed=0)
    top = all_scores(r, cases).topk(top_k, dim=1).indices.numpy()
    # The case's item is the successor of the user's previous item.
    assert (top == cases.items[:, None]).any(1).all()


@pytest.mark.parametrize("kind", KINDS)
def test_scores_never_use_the_case_or_later_interactions(kind):
    ds = random_dataset()
    r = started(kind, ds)
    t = ds.split.retrain_start
    r.fit_period(t)
    cases = build_cases(ds, t + 1, seed=0)
    rows = np.arange(len(cases))
    base = r.score(cases, rows, cases.n_universe).clone()
    items0, users0 = ds.items.copy(), ds.users.copy()
    rng = np.random.default_rng(0)
    n_seen = int(ds.items[: ds.offsets[t + 1]].max()) + 1
    checked_changes = 0
    for row in rng.permutation(len(cases))[:12]:
        p = int(cases.positions[row])
        before = r.score(cases, np.array([row]), cases.n_universe)  # same batch shape as below
        assert torch.allclose(before[0], base[row], atol=1e-5)
        # Rewrite the case and everything after it (items among those trained on, users shuffled).
        ds.items[p:] = rng.integers(0, n_seen, len(ds.items) - p)
        ds.users[p + 1:] = rng.permutation(ds.users[p + 1:])
        r._index = None
        after = r.score(cases, np.array([row]), cases.n_universe)
        assert torch.equal(after, before), f"row {row} changed when its future changed"
        ds.items[:], ds.users[:] = items0, users0
        # Changing an earlier interaction of the same user does change the scores (not vacuous).
        earlier = np.flatnonzero(ds.users[:p] == ds.users[p])
        if len(earlier):
            q = earlier[-1]
            ds.items[q] = (ds.items[q] + 1) % n_seen
            r._index = None
            changed = r.score(cases, np.array([row]), cases.n_universe)
            checked_changes += int(not torch.equal(changed, before))
            ds.items[:] = items0
    assert checked_changes > 0
    r._index = None
    assert torch.equal(r.score(cases, rows, cases.n_universe), base)


@pytest.mark.parametrize("kind", KINDS)
def test_an_interaction_of_the_same_time_is_not_history(kind):
    """Ties in time keep the file's order: on MovieLens half the test cases had an item rated in the
    same second among their 'history', in an order that is not the user's."""
    ds = random_dataset()
    r = started(kind, ds)
    t = ds.split.retrain_start
    r.fit_period(t)
    cases = build_cases(ds, t + 1, seed=0)
    n_seen = int(ds.items[: ds.offsets[t + 1]].max()) + 1
    items0, times0 = ds.items.copy(), ds.times.copy()
    tested = 0
    for row in range(len(cases)):
        p = int(cases.positions[row])
        earlier = np.flatnonzero(ds.users[:p] == ds.users[p])
        if len(earlier) < 2 or tested >= 4:
            continue
        q = earlier[-1]
        ds.times[q:p + 1] = ds.times[p]  # the user's last earlier interaction now has the case's time
        r._index = None
        before = r.score(cases, np.array([row]), cases.n_universe)
        ds.items[q] = (ds.items[q] + 1) % n_seen
        r._index = None
        assert torch.equal(r.score(cases, np.array([row]), cases.n_universe), before), row
        ds.items[:], ds.times[:] = items0, times0
        tested += 1
    assert tested == 4


@pytest.mark.parametrize("kind", KINDS)
def test_defined_scores_for_users_and_items_never_trained_on(kind):
    ds = random_dataset(seed=5)
    t = ds.split.retrain_start
    r = started(kind, ds)
    r.fit_period(t)
    last = ds.n_periods - 1
    cases = build_cases(ds, last, seed=0)  # several periods ahead: new users and items appear
    s = all_scores(r, cases)
    assert torch.isfinite(s).all()
    n_seen = int(ds.items[: ds.offsets[t + 1]].max()) + 1
    assert n_seen < cases.n_universe
    assert (s[:, n_seen:].amax(1) < s[:, :n_seen].amin(1)).all()  # untrained items rank last


# ---------------------------------------------------------------- checkpoints and engine


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_scores_and_training_identically(kind):
    ds = random_dataset(seed=2)
    t = ds.split.retrain_start
    a = started(kind, ds)
    a.fit_period(t)
    b = started(kind, ds)
    b.fit_period(t + 3)  # a different model, Adam state and clock: all must come from the state
    b.load_state_dict(a.state_dict())
    cases = build_cases(ds, t + 1, seed=0)
    assert torch.equal(all_scores(a, cases), all_scores(b, cases))
    a.fit_period(t + 1)
    b.fit_period(t + 1)
    cases = build_cases(ds, t + 2, seed=0)
    assert torch.equal(all_scores(a, cases), all_scores(b, cases))


def run_engine(ds, checkpoint_dir: Path, until=None, committed=None):
    specs = [MethodSpec(kind, dict(SMALL[kind])) for kind in KINDS]
    eng = ReplayEngine(ds, specs, seed=0, device="cpu", checkpoint_dir=checkpoint_dir, committed=committed)
    results = []
    eng.subscribe(lambda ev: results.append(ev) if isinstance(ev, MethodResult) else None)
    eng.run(until)
    return eng, results


def test_engine_end_to_end_and_resume_identically(tmp_path):
    ds = cycle_dataset(n_users=30, n_items=40, steps=24)
    _, full = run_engine(ds, tmp_path / "a")
    assert {r.status for r in full} == {"ok"}
    n_steps = ds.n_periods - 1 - ds.split.retrain_start
    assert len(full) == 2 * n_steps
    for r in full:
        assert np.isfinite(r.metrics["recall@20"]) and r.retrain_s >= 0 and r.extra["train_interactions"] > 0
    assert all("pretrain_s" in r.extra for r in full if r.period == ds.split.retrain_start + 1)
    # A run killed after two steps and resumed from its checkpoints ends with the same ranks.
    eng, first = run_engine(ds, tmp_path / "b", until=ds.split.retrain_start + 1)
    _, rest = run_engine(ds, tmp_path / "b", committed=eng.committed)
    resumed = {(r.method, r.period): r for r in itertools.chain(first, rest)}
    assert len(resumed) == len(full)
    for r in full:
        other = resumed[(r.method, r.period)]
        assert np.array_equal(r.sampled_rank, other.sampled_rank) and np.array_equal(r.full_rank, other.full_rank)


ML = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"


@pytest.mark.integration
@pytest.mark.skipif(not ML.exists(), reason="MovieLens-100k not in ../shared/data")
def test_movielens_first_periods_far_above_random():
    from sml_sim.data.protocols import DatasetSpec, load_dataset

    ds = load_dataset(DatasetSpec(protocol="movielens", data=str(ML)))
    specs = [MethodSpec("gru4rec", {"pretrain_epochs": 3, "epochs": 1}),
             MethodSpec("caser", {"pretrain_epochs": 3, "epochs": 3})]
    eng = ReplayEngine(ds, specs, seed=0, device="cpu")
    results = []
    eng.subscribe(lambda ev: results.append(ev) if isinstance(ev, MethodResult) else None)
    eng.run(until=ds.split.retrain_start)
    assert {r.method for r in results} == set(KINDS)
    for r in results:
        assert r.status == "ok" and r.metrics["recall@20"] > 0.1, (r.method, r.metrics)  # random: ~0.02
