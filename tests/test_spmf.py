"""SPMF: reservoir sampling keeps each past interaction with probability |R|/N, never exceeds |R|,
and the rank-weighted sampling favours badly fitted pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sml_sim.retrainers import make_retrainer
from sml_sim.retrainers.base import ReplayContext
from sml_sim.retrainers.mf_methods import SPMF, pretrain_mf

pytestmark = pytest.mark.usefixtures("one_thread")


def _fresh_spmf(cap: int) -> SPMF:
    r = make_retrainer("spmf", {"reservoir": cap})
    assert isinstance(r, SPMF)
    r.res_users = np.empty(0, dtype=np.int64)
    r.res_items = np.empty(0, dtype=np.int64)
    r.seen = 0
    return r


def _stream_into(r: SPMF, n: int, chunks, seed: int):
    """Feed positions 0..n-1 (as user ids; item = position + 1000) in the given chunk sizes."""
    assert sum(chunks) == n
    pos = 0
    for c, size in enumerate(chunks):
        ids = np.arange(pos, pos + size, dtype=np.int64)
        r.update_reservoir(ids, ids + 1000, np.random.default_rng([seed, c]))
        pos += size
        assert len(r.res_users) <= r.hp("reservoir")
        assert len(r.res_users) == min(pos, r.hp("reservoir"))
        assert r.seen == pos


def test_reservoir_keeps_each_interaction_with_probability_R_over_N():
    cap, n, runs = 25, 250, 2000
    counts = np.zeros(n)
    for seed in range(runs):
        r = _fresh_spmf(cap)
        _stream_into(r, n, [10, 40, 1, 119, 80], seed)
        kept = r.res_users
        assert len(np.unique(kept)) == cap, "no interaction may occupy two slots"
        assert np.array_equal(r.res_items, kept + 1000), "user and item of a slot must stay paired"
        counts[kept] += 1
    p = cap / n
    expected = runs * p
    sd = np.sqrt(runs * p * (1 - p))
    z = (counts - expected) / sd
    assert np.abs(z).max() < 5, (counts.min(), counts.max(), expected)
    # the early, the middle and the late stream are kept equally often (no recency or primacy bias)
    thirds = [counts[:83].mean(), counts[83:166].mean(), counts[166:].mean()]
    for t in thirds:
        assert abs(t - expected) < 5 * sd / np.sqrt(80), thirds
    chi2 = float((z ** 2).sum())
    # roughly chi-square with n - 1 dof: mean 249, sd 22
    assert chi2 < 249 + 5 * 22, chi2


def test_reservoir_chunking_does_not_bias_the_first_chunk():
    """A single large chunk versus many small ones: the first positive's inclusion rate is |R|/N."""
    cap, n, runs = 5, 50, 2000
    for chunks in ([50], [5, 45], [3, 7] * 5):
        first = 0
        for seed in range(runs):
            r = _fresh_spmf(cap)
            _stream_into(r, n, chunks, seed)
            first += int(0 in r.res_users)
        p = cap / n
        sd = np.sqrt(runs * p * (1 - p))
        assert abs(first - runs * p) < 5 * sd, (chunks, first / runs)


def test_reservoir_never_exceeds_its_size_in_a_replay(make_dataset):
    ds = make_dataset(n=2000, periods=8, split=(5, 1, 2), retrain_start=2)
    ctx = ReplayContext(ds, torch.device("cpu"), seed=0)
    r = make_retrainer("spmf", {"reservoir": 300, "epochs": 1, "batch_size": 128})
    initial = pretrain_mf(ctx, {"epochs": 1, "dim": 4})
    r.start(ctx, initial)
    n_pre = int(ds.offsets[ds.split.retrain_start])
    assert r.seen == n_pre and len(r.res_users) == min(300, n_pre)
    for t in range(ds.split.retrain_start, ds.n_periods - 1):
        extra = r.fit_period(t)
        assert len(r.res_users) == len(r.res_items) <= 300
        assert extra["reservoir"] == len(r.res_users)
        assert extra["train_interactions"] == len(ds.period(t)) + (300 if t > ds.split.retrain_start else
                                                                    min(300, n_pre))
        assert r.seen == int(ds.offsets[t + 1])
        # the reservoir holds real past interactions only (no future ones)
        past = set(zip(ds.users[: ds.offsets[t + 1]].tolist(), ds.items[: ds.offsets[t + 1]].tolist()))
        assert set(zip(r.res_users.tolist(), r.res_items.tolist())) <= past


def test_sampling_weights_favour_badly_fitted_pairs(make_dataset, monkeypatch):
    ds = make_dataset(n=1200, periods=6, split=(3, 1, 2), retrain_start=1)
    ctx = ReplayContext(ds, torch.device("cpu"), seed=0)
    r = make_retrainer("spmf", {"reservoir": 200, "epochs": 1})
    r.start(ctx, pretrain_mf(ctx, {"epochs": 2, "dim": 4}))
    captured = {}

    def fake_train_on(t, users, items, **kw):
        captured.update(users=users.clone(), items=items.clone(), weights=kw["sample_weights"].clone())
        return 0.0

    monkeypatch.setattr(r, "train_on", fake_train_on)
    res_before = r.res_users.copy()
    r.fit_period(1)
    users, items, w = captured["users"], captured["items"], captured["weights"]
    # W = R + D_t
    assert len(users) == len(res_before) + len(ds.period(1))
    with torch.no_grad():
        scores = (r.model.P[users] * r.model.Q[items]).sum(1)
    lower = scores[:, None] < scores[None, :]
    assert torch.all(w[:, None][lower.nonzero(as_tuple=True)[0]].squeeze(1)
                     > w[lower.nonzero(as_tuple=True)[1]]), "a lower score must get a higher weight"
    # exp(rank / |W|): the worst fitted pair is about e times likelier than the best
    worst, best = int(torch.argmin(scores)), int(torch.argmax(scores))
    assert float(w[worst] / w[best]) == pytest.approx(np.e, rel=0.01)
    assert torch.all(w > 0)


def test_spmf_weights_change_what_is_trained(make_dataset):
    """End to end: SPMF trains (the model moves) and its reservoir state survives a state_dict round trip."""
    ds = make_dataset(n=1200, periods=6, split=(3, 1, 2), retrain_start=1)
    ctx = ReplayContext(ds, torch.device("cpu"), seed=0)
    init = pretrain_mf(ctx, {"epochs": 1, "dim": 4})
    a = make_retrainer("spmf", {"reservoir": 100, "epochs": 1})
    a.start(ctx, init)
    before = a.model.P.clone()
    a.fit_period(1)
    assert not torch.equal(before, a.model.P)
    b = make_retrainer("spmf", {"reservoir": 100, "epochs": 1})
    b.start(ctx, init)
    b.load_state_dict(a.state_dict())
    assert np.array_equal(a.res_users, b.res_users) and b.seen == a.seen
    a.fit_period(2)
    b.fit_period(2)
    assert torch.equal(a.model.P, b.model.P) and np.array_equal(a.res_items, b.res_items)
