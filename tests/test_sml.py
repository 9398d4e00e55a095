"""SML (Algorithms 1 and 2) on tiny streams: what each step may touch, look-ahead, variants."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from sml_sim.data.base import RawStream, Split, build_dataset
from sml_sim.engine import MethodResult, MethodSpec, ReplayEngine
from sml_sim.retrainers import METHODS, make_retrainer
from sml_sim.retrainers.base import ReplayContext
from sml_sim.retrainers.mf_methods import pretrain_mf
from sml_sim.retrainers.sml import GROUPS, VARIANTS

TINY = {"outer_iters": 2, "fc_size": 32, "batch_w_hat": 64, "batch_theta": 32}


def tiny_dataset(n_periods: int = 8, per_period: int = 120, seed: int = 0, split=(5, 1, 2), start: int = 2,
                 drifting: bool = False):
    """A low-rank stream: 40 users x 60 items, users prefer items of their own cluster. ``drifting``:
    period p draws its items from ids 8p..8p+19 instead, so new items keep arriving and old ones die,
    as on a news stream."""
    rng = np.random.default_rng(seed)
    n = n_periods * per_period
    users = rng.integers(0, 40, n)
    if drifting:
        items = np.arange(n) * n_periods // n * 8 + rng.integers(0, 20, n)
    else:
        items = (users % 4) * 15 + rng.integers(0, 15, n)
    times = np.arange(n, dtype=np.int64) * 60
    raw = RawStream(users.astype(np.int64), items.astype(np.int64), times)
    return build_dataset(
        raw, name="tiny", source="test", is_synthetic=True, params={}, min_user=1, min_item=1,
        cut=lambda t: ((np.arange(len(t)) * n_periods // len(t)).astype(np.int32), None),
        split_for=lambda n_p: Split.from_counts(n_p, *split, start),
    )


def started(ds, name="sml", **params):
    ctx = ReplayContext(ds, torch.device("cpu"), seed=3)
    initial = pretrain_mf(ctx, {"epochs": 2})
    r = make_retrainer(name, {**TINY, **params})
    r.start(ctx, initial)
    return r, ctx


def test_variants_are_registered():
    for name in VARIANTS:
        assert name in METHODS


def test_step1_changes_only_w_hat_and_step2_only_theta():
    ds = tiny_dataset()
    r, _ = started(ds)
    W_prev = {g: r.W[g].clone() for g in GROUPS}
    W_hat, opt = r._new_w_hat(W_prev)
    before_hat = {g: W_hat[g].clone() for g in GROUPS}
    theta_before = [p.detach().clone() for net in r.theta.values() for p in net.parameters()]

    r._step1(2, ds.period(2), W_prev, W_hat, opt, 1, lambda: None)
    assert any(not torch.equal(W_hat[g], before_hat[g]) for g in GROUPS)
    assert all(torch.equal(a, b) for a, b in zip(theta_before, (p for net in r.theta.values()
                                                                 for p in net.parameters())))
    assert all(torch.equal(W_prev[g], r.W[g]) for g in GROUPS)

    hat_after_step1 = {g: W_hat[g].clone() for g in GROUPS}
    r._step2(2, ds.period(3), W_prev, W_hat, 1, lambda: None)
    assert all(torch.equal(W_hat[g], hat_after_step1[g]) for g in GROUPS)
    assert any(not torch.equal(a, b) for a, b in zip(theta_before, (p for net in r.theta.values()
                                                                     for p in net.parameters())))


def test_step1_touches_only_rows_of_the_period():
    ds = tiny_dataset()
    r, _ = started(ds)
    W_hat, opt = r._new_w_hat(r.W)
    before = W_hat["user"].clone()
    period = ds.period(2)
    r._step1(2, period, r.W, W_hat, opt, 1, lambda: None)
    changed = torch.nonzero((W_hat["user"] != before).any(1)).flatten().numpy()
    assert set(changed) <= set(np.unique(period.users))


def test_default_transfer_has_the_papers_parameter_count():
    ds = tiny_dataset()
    ctx = ReplayContext(ds, torch.device("cpu"), seed=0)
    r = make_retrainer("sml")
    r.start(ctx, pretrain_mf(ctx, {"epochs": 1}))
    n = sum(p.numel() for p in r.theta["user"].parameters())
    assert n == 30 + 50 + (5 * 64 * 512 + 512) + (512 * 64 + 64)


def run_scores(ds, method="sml", upto=None, **params):
    eng = ReplayEngine(ds, [MethodSpec(method, {**TINY, **params})], seed=5, pretrain={"epochs": 2})
    out = {}
    eng.subscribe(lambda e: out.__setitem__(e.period, e) if isinstance(e, MethodResult) else None)
    eng.run(until=upto)
    return out


@pytest.mark.parametrize("method, params, make", [
    ("sml", {}, tiny_dataset), ("sml-s", {}, tiny_dataset),
    # the two options on a stream where items keep arriving (the pool itself: test_theta_negative_pool_...)
    ("sml", {"theta_negatives": "seen", "max_row_norm": 0.1, "theta_init": "he"},
     lambda n_periods: tiny_dataset(n_periods, drifting=True))])
def test_no_look_ahead(method, params, make):
    """The model serving period t+1 is the same whether or not data beyond t+1 exists."""
    full = make(n_periods=8)
    res_full = run_scores(full, method, **params)
    # Same first 7 periods, the 8th dropped: the last training period keeps D_{T+1} only if it exists.
    cut = make(n_periods=8)
    keep = cut.periods < 7
    from sml_sim.data.base import Dataset

    truncated = Dataset(
        name=cut.name, source="test", is_synthetic=True, params={}, users=cut.users[keep], items=cut.items[keep],
        times=cut.times[keep], periods=cut.periods[keep], n_users=cut.n_users, n_items=cut.n_items,
        split=Split.from_counts(7, 5, 1, 1, 2),
    )
    res_cut = run_scores(truncated, method, **params)
    for period in range(3, 7):
        assert res_full[period].in_sample == res_cut[period].in_sample
        np.testing.assert_array_equal(res_full[period].sampled_rank, res_cut[period].sampled_rank)
        np.testing.assert_array_equal(res_full[period].full_rank, res_cut[period].full_rank)


def test_in_sample_only_in_training_periods():
    ds = tiny_dataset()
    res = run_scores(ds)
    for period, r in res.items():
        # Theta saw D_{t+1} in training periods (Algorithm 1) but never a validation/test period.
        assert r.in_sample == (period <= ds.split.train[1]), period
    assert not any(r.in_sample for r in run_scores(ds, "sml-n").values())


@pytest.mark.parametrize("method", sorted(VARIANTS))
def test_every_variant_runs_end_to_end(method):
    ds = tiny_dataset(n_periods=6, per_period=80, split=(3, 1, 2), start=1)
    res = run_scores(ds, method)
    assert sorted(res) == [2, 3, 4, 5]
    for r in res.values():
        assert r.status == "ok", r.error
        assert np.isfinite(r.metrics["recall@20"])


def test_filters_are_reported_for_cnn_only():
    ds = tiny_dataset(n_periods=6, per_period=80, split=(3, 1, 2), start=1)
    assert np.array(run_scores(ds, "sml")[5].extra["filters"]["user"]).shape == (10, 3)
    assert "filters" not in run_scores(ds, "sml-cnn")[5].extra


def test_checkpoint_round_trip_gives_identical_results():
    ds = tiny_dataset()
    r, ctx = started(ds)
    r.fit_period(2, ds.period(3))
    buf = io.BytesIO()  # through bytes, as the engine's checkpoint files are
    torch.save(r.state_dict(), buf)
    buf.seek(0)
    r2, _ = started(ds)
    r2.load_state_dict(torch.load(buf, weights_only=False))
    for t in (3, 4, 5, 6):
        nxt = ds.period(t + 1) if t + 1 <= ds.split.train[1] else None
        r.fit_period(t, nxt)
        r2.fit_period(t, nxt)
    for g in GROUPS:
        assert torch.equal(r.W[g], r2.W[g])


def test_sml_learns_beyond_random():
    ds = tiny_dataset(n_periods=8, per_period=300)
    res = run_scores(ds, "sml", outer_iters=10, lr_theta=0.01, fc_size=128)
    test = [r.metrics["recall@20"] for p, r in res.items() if p in (6, 7)]
    # 60 items: random ranks the positive in the top 20 of its ~45-60 candidates ~ 1/3 of the time.
    assert np.mean(test) > 0.6


def test_idle_rows_keep_freezes_only_rows_seen_before_and_absent_now():
    """idle_rows = "keep": a row seen earlier but absent from D_t keeps W_{t-1}; active rows and
    rows not seen yet go through the transfer, as every row does by default."""
    from sml_sim.data.base import PeriodData

    ds = tiny_dataset()
    r, _ = started(ds, idle_rows="keep")
    W_prev = {g: r.W[g].clone() for g in GROUPS}
    W_hat = {g: W_prev[g] + 0.1 for g in GROUPS}
    active_users, active_items = np.array([1, 2, 3]), np.array([4, 5, 6])
    data = PeriodData(3, active_users, active_items, np.zeros(3, dtype=np.int64), 10_000)
    r._first_period["user"][7] = 5  # user 7 is first seen after period 3: not seen yet
    new = r._transfer_all(W_prev, W_hat, data)
    moved = {g: torch.nonzero((new[g] != W_prev[g]).any(1)).flatten().tolist() for g in GROUPS}
    unseen = {g: set(torch.nonzero(r._first_period[g] >= 3).flatten().tolist()) for g in GROUPS}
    assert 7 in unseen["user"] and len(unseen["user"]) < ds.n_users - 3
    assert moved["user"] == sorted({1, 2, 3} | unseen["user"])
    assert moved["item"] == sorted({4, 5, 6} | unseen["item"])
    with torch.no_grad():
        expected = r.theta["user"](W_prev["user"][[1, 7]], W_hat["user"][[1, 7]])
    torch.testing.assert_close(new["user"][[1, 7]], expected)

    r_all, _ = started(ds)
    every = r_all._transfer_all(W_prev, W_hat, data)
    assert all(bool((every[g] != W_prev[g]).any(1).all()) for g in GROUPS)


def test_idle_rows_rejects_unknown_values():
    with pytest.raises(ValueError, match="idle_rows"):
        started(tiny_dataset(), idle_rows="freeze")


def test_max_row_norm_scales_down_only_the_rows_longer_than_it():
    from sml_sim.models.transfer import apply_in_chunks

    ds = tiny_dataset()
    r, _ = started(ds, theta_init="he")  # He init: output norms spread widely
    W_prev = {g: r.W[g].clone() for g in GROUPS}
    W_hat = {g: W_prev[g] * torch.linspace(0.1, 3.0, len(W_prev[g])).unsqueeze(1) for g in GROUPS}
    free = {g: apply_in_chunks(r.theta[g], W_prev[g], W_hat[g]) for g in GROUPS}
    norms = {g: torch.linalg.vector_norm(free[g], dim=1) for g in GROUPS}
    limit = float(torch.cat(list(norms.values())).median())
    r.params["max_row_norm"] = limit
    bounded = r._transfer_all(W_prev, W_hat, ds.period(3))
    for g in GROUPS:
        long = norms[g] > limit
        assert 0 < int(long.sum()) < len(long), g  # the test covers both kinds of row
        torch.testing.assert_close(bounded[g][~long], free[g][~long])
        torch.testing.assert_close(torch.linalg.vector_norm(bounded[g][long], dim=1),
                                   torch.full((int(long.sum()),), limit))
        torch.testing.assert_close(bounded[g][long], free[g][long] * (limit / norms[g][long]).unsqueeze(1))


def test_theta_negative_pool_is_the_period_or_every_item_seen():
    ds = tiny_dataset(n_periods=8, per_period=40)
    period = ds.period(3)
    default, _ = started(ds)
    assert default._theta_negative_pool(period).tolist() == sorted(set(period.items.tolist()))
    seen, _ = started(ds, theta_negatives="seen")
    pool = seen._theta_negative_pool(period).tolist()
    assert pool == sorted(set(ds.items[ds.periods <= 3].tolist()))  # every item of periods 0..3, no later one
    assert set(period.items.tolist()) < set(pool)  # a strict superset on this stream
    drifting = tiny_dataset(drifting=True)
    r, _ = started(drifting, theta_negatives="seen")
    assert r._theta_negative_pool(drifting.period(3)).tolist() == sorted(set(drifting.items[drifting.periods <= 3].tolist()))
    assert int(drifting.items.max()) + 1 > len(r._theta_negative_pool(drifting.period(3)))


@pytest.mark.parametrize("params, message", [({"theta_negatives": "all"}, "theta_negatives"),
                                             ({"max_row_norm": -1.0}, "max_row_norm")])
def test_new_options_reject_bad_values(params, message):
    with pytest.raises(ValueError, match=message):
        started(tiny_dataset(), **params)


def test_sml_variants_start_from_the_scenarios_sml_settings(tmp_path):
    from sml_sim.config import load_scenario

    toml = tmp_path / "s.toml"
    toml.write_text("""
[dataset]
protocol = "synthetic-yelp"
[run]
methods = ["sml", "sml-s", "sml-cnn", "sml-n", "mine", "fine"]
[methods.sml]
theta_init = "he"
outer_iters = 3
use_conv = true
[methods.sml-n]
outer_iters = 2
[methods.mine]
kind = "sml-s"
fc_size = 16
[methods.fine]
epochs = 2
""")
    specs = {s.name: s.params for s in load_scenario(toml).method_specs()}
    assert specs["sml"] == {"theta_init": "he", "outer_iters": 3, "use_conv": True}
    assert specs["sml-s"] == {"theta_init": "he", "outer_iters": 3, "use_conv": True,
                              "freeze_theta_serving": True}
    assert specs["sml-cnn"]["use_conv"] is False  # the ablation wins over the inherited setting
    assert specs["sml-n"] == {"theta_init": "he", "outer_iters": 2, "use_conv": True, "theta_on": "current"}
    assert specs["mine"] == {"kind": "sml-s", "fc_size": 16}  # a named configuration stands alone
    assert specs["fine"] == {"epochs": 2}
    built = make_retrainer("sml-s", specs["sml-s"])
    assert built.hp("theta_init") == "he" and built.hp("freeze_theta_serving") is True


@pytest.mark.parametrize("idle_rows", ["transfer", "keep"])
def test_max_row_norm_holds_after_every_period(idle_rows):
    ds = tiny_dataset(drifting=True)
    r, _ = started(ds, theta_init="he", max_row_norm=0.1, idle_rows=idle_rows)
    longest = []
    for t in range(ds.split.retrain_start, ds.split.train[1] + 1):
        r.fit_period(t, ds.period(t + 1) if t < ds.split.train[1] else None)
        longest.append(max(float(torch.linalg.vector_norm(r.W[g], dim=1).max()) for g in GROUPS))
    assert max(longest) <= 0.1 + 1e-5
    assert max(longest) > 0.1 - 1e-5  # the bound was reached, so it was tested


@pytest.mark.parametrize("method", ["sml", "sml-n"])
def test_last_training_period_breaks_after_step_1(method):
    """Algorithm 1 line 8: at t == T step 1 runs once and Theta is not trained. SML-N replaces only
    line 9's D_{t+1} by D_t (paper 4.3), so it breaks there too, although it never needs D_{T+1}."""
    ds = tiny_dataset()
    r, _ = started(ds, method)
    last = ds.split.train[1]
    theta_before = [p.detach().clone() for net in r.theta.values() for p in net.parameters()]
    out = r.fit_period(last, None)  # as the engine calls it: D_{T+1} is a validation period
    assert all(torch.equal(a, b) for a, b in zip(theta_before, (p for net in r.theta.values()
                                                                 for p in net.parameters())))
    assert r.w_hat_opt["user"].steps == -(-len(ds.period(last)) // TINY["batch_w_hat"])  # one pass, not 2
    assert "loss_step2" not in out and "loss_step1" in out


@pytest.mark.parametrize("params", [{"epochs_w_hat": 0}, {"epochs_theta": 0}])
def test_a_step_with_no_epochs_is_skipped_not_a_nan_failure(params):
    ds = tiny_dataset(n_periods=6, per_period=80, split=(3, 1, 2), start=1)
    res = run_scores(ds, "sml", **params)
    assert all(r.status == "ok" for r in res.values()), [r.error for r in res.values()]


def test_detach_product_reaches_the_transfer():
    ds = tiny_dataset()
    for value in (True, False):
        r, _ = started(ds, detach_product=value)
        assert all(net.detach_product is value for net in r.theta.values())


def test_an_empty_period_keeps_the_model_and_the_run_goes_on():
    """Adressa's day slots can be empty on a tiny stream: SML keeps W_{t-1} there and carries on."""
    rng = np.random.default_rng(0)
    n = 8 * 120
    users, items = rng.integers(0, 40, n), rng.integers(0, 60, n)
    raw = RawStream(users.astype(np.int64), items.astype(np.int64), np.arange(n, dtype=np.int64) * 60)

    def cut(times):  # 8 equal periods renumbered around an empty period 4
        p = (np.arange(len(times)) * 8 // len(times)).astype(np.int32)
        return np.where(p >= 4, p + 1, p), None

    ds = build_dataset(raw, name="gap", source="test", is_synthetic=True, params={}, min_user=1, min_item=1,
                       cut=cut, split_for=lambda n_p: Split.from_counts(n_p, 6, 1, 2, 2))
    assert len(ds.period(4)) == 0
    res = run_scores(ds, "sml")
    assert all(r.status == "ok" for r in res.values()), [r.error for r in res.values()]
