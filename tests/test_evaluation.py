"""Next-period evaluation: metric formulas, shared negatives, tie breaking, full ranking, NaN guard,
and the random reference's Recall@20."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sml_sim.data.base import Dataset, Split
from sml_sim.evaluation import (
    METRIC_KEYS,
    N_NEGATIVES,
    ScoringError,
    build_cases,
    metrics_from_ranks,
    rank_cases,
)

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


# ------------------------------------------------------------------ metric formulas


def test_metric_formulas_on_hand_made_ranks():
    sampled = np.array([0, 4, 5, 9, 10, 19, 20, 998])
    full = np.array([0, 0, 1, 2, 100, 50, 30, 3])
    m = metrics_from_ranks(sampled, full)
    assert set(m) == set(METRIC_KEYS)

    def ndcg(r):
        return 1 / math.log2(r + 2)

    assert m["recall@5"] == pytest.approx(2 / 8)
    assert m["recall@10"] == pytest.approx(4 / 8)
    assert m["recall@20"] == pytest.approx(6 / 8)
    assert m["ndcg@5"] == pytest.approx((ndcg(0) + ndcg(4)) / 8)
    assert m["ndcg@10"] == pytest.approx((ndcg(0) + ndcg(4) + ndcg(5) + ndcg(9)) / 8)
    assert m["ndcg@20"] == pytest.approx((ndcg(0) + ndcg(4) + ndcg(5) + ndcg(9) + ndcg(10) + ndcg(19)) / 8)
    assert m["full_recall@5"] == pytest.approx(5 / 8)
    assert m["full_recall@20"] == pytest.approx(5 / 8)
    assert m["full_ndcg@5"] == pytest.approx((2 * ndcg(0) + ndcg(1) + ndcg(2) + ndcg(3)) / 8)
    assert m["full_ndcg@20"] == m["full_ndcg@5"]


def test_metric_single_cases():
    m = metrics_from_ranks(np.array([0]), np.array([0]))
    assert all(v == pytest.approx(1.0) for v in m.values())
    m = metrics_from_ranks(np.array([1]), np.array([20]))
    assert m["recall@5"] == 1 and m["ndcg@5"] == pytest.approx(1 / math.log2(3))
    assert m["full_recall@20"] == 0 and m["full_ndcg@20"] == 0
    m = metrics_from_ranks(np.array([5]), np.array([4]))
    assert m["recall@5"] == 0 and m["recall@10"] == 1 and m["full_recall@5"] == 1


# ------------------------------------------------------------------ datasets built by hand


def _many_items_dataset(n_items=5000, n_users=30, seed=0, period1=600):
    """Period 0 introduces n_items items (dense ids by first appearance); period 1 has test cases."""
    rng = np.random.default_rng(seed)
    u0 = rng.integers(0, n_users, n_items)
    u0[:n_users] = np.arange(n_users)
    i0 = np.arange(n_items)
    u1 = rng.integers(0, n_users, period1)
    i1 = rng.integers(0, n_items, period1)
    users = np.concatenate([u0, u1])
    items = np.concatenate([i0, i1])
    periods = np.concatenate([np.zeros(n_items), np.ones(period1)])
    # ids must follow first appearance
    assert users[:n_users].tolist() == list(range(n_users))
    return Dataset(
        name="many", source="many", is_synthetic=True, params={}, users=users.astype(np.int64),
        items=items.astype(np.int64), times=np.arange(len(users), dtype=np.int64),
        periods=periods.astype(np.int32), n_users=n_users, n_items=n_items,
        split=Split(n_periods=2, train=(0, 0), validation=(1, 0), test=(1, 1), retrain_start=0))


def _history_upto(ds, period):
    end = int(ds.offsets[period + 1])
    hist = {}
    for u, i in zip(ds.users[:end].tolist(), ds.items[:end].tolist()):
        hist.setdefault(u, set()).add(i)
    return hist


def _check_negatives(ds, cases, period):
    hist = _history_upto(ds, period)
    end = int(ds.offsets[period + 1])
    n_universe = int(ds.items[:end].max()) + 1
    assert cases.n_universe == n_universe
    for row in range(len(cases)):
        u, pos = int(cases.users[row]), int(cases.items[row])
        neg = cases.negatives[row]
        valid = neg[neg >= 0]
        assert np.all(neg[len(valid):] == -1), "padding must come last"
        assert len(set(valid.tolist())) == len(valid), "negatives must be distinct"
        assert pos not in set(valid.tolist())
        assert not (set(valid.tolist()) & hist[u]), "a negative is in the user's history"
        assert np.all(valid < n_universe)
        eligible = n_universe - len(hist[u])
        assert len(valid) == min(N_NEGATIVES, eligible)
        assert cases.n_candidates[row] == 1 + len(valid)


def test_negatives_plentiful_path(one_thread):
    ds = _many_items_dataset()
    cases = build_cases(ds, 1, seed=11)
    assert len(cases) == 600
    _check_negatives(ds, cases, 1)
    assert np.all(cases.n_candidates == 1 + N_NEGATIVES)
    again = build_cases(ds, 1, seed=11)
    assert np.array_equal(cases.negatives, again.negatives)
    assert np.array_equal(cases.tie_break, again.tie_break)
    other = build_cases(ds, 1, seed=12)
    assert not np.array_equal(np.sort(cases.negatives, 1), np.sort(other.negatives, 1))


def test_negatives_exclude_later_interactions_in_the_same_period():
    """History runs to the end of the evaluated period: an item the user reads later in the period is
    not a negative for the user's earlier case."""
    ds = _many_items_dataset(n_items=4500, n_users=3, period1=0)
    # period 1: user 0 interacts with items 10, 20, 30, ... 3000 (300 items), one after the other
    later = np.arange(10, 3010, 10)
    users = np.concatenate([ds.users, np.zeros(len(later), dtype=np.int64)])
    items = np.concatenate([ds.items, later])
    periods = np.concatenate([ds.periods, np.ones(len(later), dtype=np.int32)])
    ds2 = Dataset(name="m", source="m", is_synthetic=True, params={}, users=users, items=items,
                  times=np.arange(len(users), dtype=np.int64), periods=periods, n_users=3, n_items=4500,
                  split=ds.split)
    cases = build_cases(ds2, 1, seed=3)
    _check_negatives(ds2, cases, 1)
    assert not np.isin(cases.negatives, later).any()


def test_negatives_fewer_than_999_eligible(make_dataset):
    ds = make_dataset(n=2000, n_users=40, n_items=150, periods=6, split=(3, 1, 2), retrain_start=1)
    cases = build_cases(ds, 4, seed=5)
    _check_negatives(ds, cases, 4)
    hist = _history_upto(ds, 4)
    for row in range(len(cases)):
        eligible = cases.n_universe - len(hist[int(cases.users[row])])
        assert cases.n_candidates[row] == 1 + eligible < 1 + N_NEGATIVES
    # all eligible items are used, so sampled and full ranks agree for any scorer without ties
    scorer = _FixedScorer(torch.randn(ds.n_items, generator=torch.Generator().manual_seed(0)))
    ranks = rank_cases(scorer, cases, CPU)
    assert np.array_equal(ranks.sampled, ranks.full)
    assert np.all(ranks.sampled < cases.n_candidates)


def test_cases_tag_new_users_and_items(make_dataset):
    ds = make_dataset(n=1500, periods=6, split=(3, 1, 2), retrain_start=1, late_newcomers=200)
    t = 5
    cases = build_cases(ds, t, seed=0)
    start = int(ds.offsets[t])
    old_users = set(ds.users[:start].tolist())
    old_items = set(ds.items[:start].tolist())
    assert cases.new_user.tolist() == [u not in old_users for u in cases.users.tolist()]
    assert cases.new_item.tolist() == [i not in old_items for i in cases.items.tolist()]
    assert cases.new_user.any() and cases.new_item.any() and (~cases.new_user).any()


# ------------------------------------------------------------------ ranking


class _FixedScorer:
    """Every case gets the same score vector."""

    def __init__(self, vec):
        self.vec = vec

    def score(self, cases, rows, n_items):
        return self.vec[:n_items].expand(len(rows), n_items).clone()


class _FnScorer:
    def __init__(self, fn):
        self.fn = fn

    def score(self, cases, rows, n_items):
        return self.fn(cases, rows, n_items)


def test_constant_scorer_ties_broken_uniformly():
    ds = _many_items_dataset(n_items=4200, period1=2000)
    cases = build_cases(ds, 1, seed=1)
    ranks = rank_cases(_FixedScorer(torch.zeros(ds.n_items)), cases, CPU)
    assert np.all(ranks.sampled >= 0) and np.all(ranks.sampled < cases.n_candidates)
    # uniform over 0..999: mean 499.5, sd 288.7 / sqrt(2000) = 6.5
    assert abs(ranks.sampled.mean() - 499.5) < 30
    assert (ranks.sampled == 0).mean() < 0.01
    m = metrics_from_ranks(ranks.sampled, ranks.full)
    assert abs(m["recall@20"] - 0.02) < 0.015
    # full ranking: uniform over the user's eligible items
    hist = _history_upto(ds, 1)
    eligible = np.array([cases.n_universe - len(hist[int(u)]) + 1 for u in cases.users])
    assert np.all(ranks.full < eligible)
    assert abs((ranks.full / (eligible - 1)).mean() - 0.5) < 0.03
    # the same seed gives the same tie breaks (shared by all methods)
    again = rank_cases(_FixedScorer(torch.ones(ds.n_items) * 3.0), cases, CPU)
    assert np.array_equal(again.sampled, ranks.sampled)


def test_full_rank_excludes_the_users_other_items():
    ds = _many_items_dataset(n_items=4100, n_users=5, period1=100)
    cases = build_cases(ds, 1, seed=2)
    hist = _history_upto(ds, 1)

    def fn(cases, rows, n_items):
        # history items score 10, the positive 5, everything else 0
        s = torch.zeros(len(rows), n_items)
        for k, r in enumerate(rows):
            s[k, list(hist[int(cases.users[r])])] = 10.0
            s[k, int(cases.items[r])] = 5.0
        return s

    ranks = rank_cases(_FnScorer(fn), cases, CPU)
    assert np.all(ranks.full == 0)
    assert np.all(ranks.sampled == 0)

    def fn2(cases, rows, n_items):
        # three non-history items above the positive
        s = torch.zeros(len(rows), n_items)
        for k, r in enumerate(rows):
            s[k, int(cases.items[r])] = 5.0
            others = [i for i in range(n_items) if i not in hist[int(cases.users[r])]][:3]
            s[k, others] = 9.0
        return s

    ranks = rank_cases(_FnScorer(fn2), cases, CPU)
    assert np.all(ranks.full == 3)


def test_sampled_rank_counts_only_the_candidates():
    ds = _many_items_dataset(n_items=4100, n_users=5, period1=50)
    cases = build_cases(ds, 1, seed=4)
    vec = torch.randn(ds.n_items, generator=torch.Generator().manual_seed(9))
    ranks = rank_cases(_FixedScorer(vec), cases, CPU)
    v = vec.numpy()
    hist = _history_upto(ds, 1)
    for row in range(len(cases)):
        neg = cases.negatives[row]
        pos = cases.items[row]
        assert ranks.sampled[row] == int((v[neg[neg >= 0]] > v[pos]).sum())
        others = np.setdiff1d(np.arange(cases.n_universe), list(hist[int(cases.users[row])]))
        assert ranks.full[row] == int((v[others] > v[pos]).sum())


def test_chunking_does_not_change_ranks(make_dataset):
    ds = make_dataset(n=3000, periods=6, split=(3, 1, 2), retrain_start=1)
    cases = build_cases(ds, 5, seed=0)
    g = torch.Generator().manual_seed(1)
    emb_u = torch.randn(ds.n_users, 4, generator=g)
    emb_i = torch.randn(ds.n_items, 4, generator=g)
    scorer = _FnScorer(lambda c, rows, n: emb_u[torch.as_tensor(c.users[rows])] @ emb_i[:n].T)
    a = rank_cases(scorer, cases, CPU)
    b = rank_cases(scorer, cases, CPU, max_chunk_elems=7 * cases.n_universe)
    assert np.array_equal(a.sampled, b.sampled) and np.array_equal(a.full, b.full)


class _UserScorer:
    """Scores that depend on the user only, offered both per case and per distinct user."""

    def __init__(self, emb_u, emb_i):
        self.emb_u, self.emb_i = emb_u, emb_i

    def score(self, cases, rows, n_items):
        return self.emb_u[torch.as_tensor(cases.users[rows])] @ self.emb_i[:n_items].T

    def score_users(self, users, n_items, out=None):
        return torch.mm(self.emb_u[users], self.emb_i[:n_items].T, out=out)


class _PerCaseOnly:
    def __init__(self, inner):
        self.score = inner.score


@pytest.mark.parametrize("threads", [1, 2])
def test_per_user_scoring_ranks_like_per_case_scoring(threads):
    """Scoring each distinct user once gives every case the rank the per-case path gives, and the
    rank a brute-force count gives, whatever the block size."""
    torch.set_num_threads(threads)
    ds = _many_items_dataset(n_items=4300, n_users=12, period1=300)  # ~25 cases per user
    cases = build_cases(ds, 1, seed=6)
    g = torch.Generator().manual_seed(3)
    scorer = _UserScorer(torch.randn(ds.n_users, 8, generator=g), torch.randn(ds.n_items, 8, generator=g))
    per_user = rank_cases(scorer, cases, CPU)
    small_blocks = rank_cases(scorer, cases, CPU, max_chunk_elems=5 * cases.n_universe)
    per_case = rank_cases(_PerCaseOnly(scorer), cases, CPU)
    assert np.array_equal(per_user.sampled, per_case.sampled) and np.array_equal(per_user.full, per_case.full)
    assert np.array_equal(per_user.sampled, small_blocks.sampled) and np.array_equal(per_user.full, small_blocks.full)
    hist = _history_upto(ds, 1)
    scores = (scorer.emb_u @ scorer.emb_i.T).numpy()
    for row in range(0, len(cases), 7):
        u, pos = int(cases.users[row]), int(cases.items[row])
        neg = cases.negatives[row]
        assert per_user.sampled[row] == int((scores[u, neg[neg >= 0]] > scores[u, pos]).sum())
        others = np.setdiff1d(np.arange(cases.n_universe), list(hist[u]))
        assert per_user.full[row] == int((scores[u, others] > scores[u, pos]).sum())


def test_plentiful_negatives_are_uniform_over_the_eligible_items():
    """Every eligible item is equally likely to be a negative (chi-square over 1.2M draws), and a
    history item never is."""
    ds = _many_items_dataset(n_items=6000, n_users=8, period1=1200)
    cases = build_cases(ds, 1, seed=21)
    hist = _history_upto(ds, 1)
    user = int(np.bincount(cases.users).argmax())
    rows = cases.users == user
    counts = np.bincount(cases.negatives[rows].ravel(), minlength=cases.n_universe)
    eligible = np.setdiff1d(np.arange(cases.n_universe), list(hist[user]))
    assert len(eligible) >= 4 * N_NEGATIVES  # the rejection sampler's path, not the explicit pool
    assert counts[list(hist[user])].sum() == 0
    observed = counts[eligible]
    expected = observed.sum() / len(eligible)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    dof = len(eligible) - 1
    # without replacement the variance shrinks by (1 - 999/eligible), so chi2 sits below dof;
    # a biased sampler (e.g. one favouring low ids) lands far above dof + 6 sd
    assert chi2 < dof + 6 * math.sqrt(2 * dof), (chi2, dof)
    low, high = observed[: len(observed) // 2].sum(), observed[len(observed) // 2:].sum()
    assert abs(low - high) / observed.sum() < 0.01


def test_nan_scorer_raises_scoring_error(make_dataset):
    ds = make_dataset(n=600, periods=6, split=(3, 1, 2), retrain_start=1)
    cases = build_cases(ds, 4, seed=0)
    with pytest.raises(ScoringError):
        rank_cases(_FixedScorer(torch.full((ds.n_items,), float("nan"))), cases, CPU)
    with pytest.raises(ScoringError):
        rank_cases(_FixedScorer(torch.full((ds.n_items,), float("inf"))), cases, CPU)


def test_wrong_shape_raises_scoring_error(make_dataset):
    ds = make_dataset(n=600, periods=6, split=(3, 1, 2), retrain_start=1)
    cases = build_cases(ds, 4, seed=0)
    with pytest.raises(ScoringError):
        rank_cases(_FnScorer(lambda c, rows, n: torch.zeros(len(rows), n + 1)), cases, CPU)


def test_random_method_recall_at_20_is_about_2_percent():
    from sml_sim.retrainers import make_retrainer
    from sml_sim.retrainers.base import ReplayContext

    ds = _many_items_dataset(n_items=4100, n_users=200, period1=3000, seed=5)
    cases = build_cases(ds, 1, seed=0)
    hits = []
    for seed in range(2):
        r = make_retrainer("random")
        r.start(ReplayContext(ds, CPU, seed))
        r.fit_period(0)
        ranks = rank_cases(r, cases, CPU, max_chunk_elems=200 * cases.n_universe)
        assert np.all(cases.n_candidates == 1000)
        hits.append(ranks.sampled < 20)
    recall = float(np.mean(hits))
    # 6000 Bernoulli(0.02) draws: sd 0.0018; the shared score vector per chunk adds some correlation
    assert abs(recall - 0.02) < 0.007, recall
