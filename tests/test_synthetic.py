"""The synthetic Yelp-like and Adressa-like streams: determinism, sizes, and the phenomena they
exist for, measured on the generated data with the protocols' own cuts (re-implemented here so
that the generator is checked independently of the protocol code)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from sml_sim.data.synthetic import (
    ADRESSA_DEFAULT_SCALE,
    ADRESSA_FULL,
    YELP_DEFAULT_SCALE,
    YELP_FULL,
    generate_adressa_like,
    generate_yelp_like,
)

OSLO = ZoneInfo("Europe/Oslo")
YELP_SCALE = 0.01  # ~30k interactions, 591 users, 1,228 items
ADRESSA_SCALE = 0.01  # ~37k interactions, 4,786 users, 209 items


# ---------------------------------------------------------------- helpers: the protocols' cuts


def time_sorted(raw):
    order = np.argsort(raw.times, kind="stable")
    return raw.users[order], raw.items[order], raw.times[order]


def counts_per_row(ids: np.ndarray) -> np.ndarray:
    """For each row, how many rows share its id."""
    _, inv, cnt = np.unique(ids, return_inverse=True, return_counts=True)
    return cnt[inv]


def yelp_filter(users, items, times, min_user=10, min_item=20):
    """One pass, counts over the whole stream (the paper's cut)."""
    keep = (counts_per_row(users) >= min_user) & (counts_per_row(items) >= min_item)
    return users[keep], items[keep], times[keep]


def equal_count_periods(n: int, n_periods: int = 40) -> np.ndarray:
    return np.arange(n) * n_periods // n


def oslo_periods(times: np.ndarray, first_day: datetime) -> np.ndarray:
    """Three periods per Oslo day, [0:00,10:00) [10:00,17:00) [17:00,24:00), counted from first_day."""
    hours = times // 3600
    uniq, inv = np.unique(hours, return_inverse=True)
    offset = np.array([datetime.fromtimestamp(int(h) * 3600, OSLO).utcoffset().total_seconds() for h in uniq])
    local = times + offset[inv].astype(np.int64)
    local_day0 = (first_day.replace(tzinfo=None) - datetime(1970, 1, 1)) // timedelta(days=1)
    day = local // 86400 - local_day0
    hour = (local % 86400) // 3600
    return day * 3 + (hour >= 10) + (hour >= 17)


def first_period_of(ids: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """For each row, the period in which its id first occurs (rows in time order)."""
    _, inv = np.unique(ids, return_inverse=True)
    first = np.full(inv.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, inv, periods)
    return first[inv]


def median_half_life_hours(items: np.ndarray, times: np.ndarray, min_clicks: int = 2) -> float:
    """Median over items of: hours after its first interaction by which half of its interactions occurred."""
    _, inv, cnt = np.unique(items, return_inverse=True, return_counts=True)
    first = np.full(len(cnt), np.iinfo(np.int64).max)
    np.minimum.at(first, inv, times)
    age = (times - first[inv]) / 3600.0
    order = np.lexsort((age, inv))  # grouped by item, ascending age
    starts = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    half = age[order][starts + (cnt - 1) // 2]
    return float(np.median(half[cnt >= min_clicks]))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def yelp():
    return generate_yelp_like(YELP_SCALE, seed=7)


@pytest.fixture(scope="module")
def adressa():
    return generate_adressa_like(ADRESSA_SCALE, seed=7)


# ---------------------------------------------------------------- shared contract


@pytest.mark.parametrize("generate, scale", [(generate_yelp_like, 0.005), (generate_adressa_like, 0.005)])
def test_same_seed_same_stream_other_seed_other_stream(generate, scale):
    a, b, c = generate(scale, seed=3), generate(scale, seed=3), generate(scale, seed=4)
    for name in ("users", "items", "times"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(np.sort(a.times), np.sort(c.times))


@pytest.mark.parametrize("generate", [generate_yelp_like, generate_adressa_like])
def test_arrays_are_int64_non_negative_and_aligned(generate):
    raw = generate(0.005, seed=0)
    assert len(raw.users) == len(raw.items) == len(raw.times) > 0
    for arr in (raw.users, raw.items, raw.times):
        assert arr.dtype == np.int64
        assert arr.min() >= 0
    assert raw.skipped == 0


@pytest.mark.parametrize("generate", [generate_yelp_like, generate_adressa_like])
def test_tiny_scale_still_works(generate):
    raw = generate(0.001, seed=1)
    assert 1_000 <= len(raw.times) <= 10_000
    assert len(np.unique(raw.users)) >= 3 and len(np.unique(raw.items)) >= 3


@pytest.mark.parametrize("generate", [generate_yelp_like, generate_adressa_like])
@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf")])
def test_bad_scale_is_refused(generate, bad):
    with pytest.raises(ValueError):
        generate(bad, seed=0)


def test_default_scales_give_a_few_tens_of_thousands_of_interactions():
    assert 40_000 <= YELP_DEFAULT_SCALE * YELP_FULL[0] <= 60_000
    assert 40_000 <= ADRESSA_DEFAULT_SCALE * ADRESSA_FULL[0] <= 70_000


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("scale", [0.005, 0.02])
def test_yelp_sizes_after_the_filter_are_proportional_to_the_paper(scale):
    users, items, _ = yelp_filter(*time_sorted(generate_yelp_like(scale, seed=0)))
    n_inter, n_users, n_items = YELP_FULL
    assert len(users) == pytest.approx(scale * n_inter, rel=0.15)
    assert len(np.unique(users)) == pytest.approx(scale * n_users, rel=0.15)
    assert len(np.unique(items)) == pytest.approx(scale * n_items, rel=0.15)


@pytest.mark.parametrize("scale", [0.005, 0.02])
def test_adressa_sizes_are_proportional_to_the_paper(scale):
    raw = generate_adressa_like(scale, seed=0)
    n_inter, n_users, n_items = ADRESSA_FULL
    assert len(raw.users) == pytest.approx(scale * n_inter, rel=0.15)
    assert len(np.unique(raw.users)) == pytest.approx(scale * n_users, rel=0.15)
    assert len(np.unique(raw.items)) == pytest.approx(scale * n_items, rel=0.15)


def test_sizes_grow_linearly_with_scale():
    small, large = generate_yelp_like(0.005, seed=0), generate_yelp_like(0.015, seed=0)
    assert len(large.times) / len(small.times) == pytest.approx(3.0, rel=0.05)
    assert len(np.unique(large.users)) / len(np.unique(small.users)) == pytest.approx(3.0, rel=0.05)
    small, large = generate_adressa_like(0.005, seed=0), generate_adressa_like(0.015, seed=0)
    assert len(large.times) / len(small.times) == pytest.approx(3.0, rel=0.05)
    assert len(np.unique(large.items)) / len(np.unique(small.items)) == pytest.approx(3.0, rel=0.05)


# ---------------------------------------------------------------- Yelp-like phenomena


def test_yelp_filter_keeps_almost_everything(yelp):
    users, items, _ = time_sorted(yelp)
    item_counts = np.unique(items, return_counts=True)[1]
    user_counts = np.unique(users, return_counts=True)[1]
    assert item_counts.min() >= 20
    assert np.mean(user_counts >= 10) >= 0.99
    kept, _, _ = yelp_filter(users, items, _)
    assert len(kept) >= 0.99 * len(users)


def test_yelp_spans_a_decade_with_activity_throughout(yelp):
    _, _, times = time_sorted(yelp)
    sample = times[:: max(1, len(times) // 2000)]
    years = np.array([datetime.fromtimestamp(int(t), UTC).year for t in sample])
    assert years.min() == 2008 and years.max() == 2017
    per_year = np.bincount(years - 2008, minlength=10) / len(years)
    assert per_year.min() > 0.005  # every year has activity
    assert per_year.max() < 0.3  # and no year dominates


def test_yelp_test_periods_are_mostly_old_users_on_old_items(yelp):
    users, items, times = yelp_filter(*time_sorted(yelp))
    periods = equal_count_periods(len(users), 40)
    old_user = first_period_of(users, periods) < periods
    old_item = first_period_of(items, periods) < periods
    test = periods >= 33
    assert np.mean(old_user[test] & old_item[test]) > 0.5
    # New users and new items do keep arriving through the whole stream, test periods included.
    for p in (5, 20, 35):
        assert (~old_user[periods == p]).any()
        assert (~old_item[periods == p]).any()


def test_yelp_users_and_items_stay_active_for_years(yelp):
    users, items, times = time_sorted(yelp)
    year = 365.25 * 86400

    def median_span(ids):
        _, inv = np.unique(ids, return_inverse=True)
        lo = np.full(inv.max() + 1, np.iinfo(np.int64).max)
        hi = np.zeros(inv.max() + 1, dtype=np.int64)
        np.minimum.at(lo, inv, times)
        np.maximum.at(hi, inv, times)
        return np.median(hi - lo) / year

    assert median_span(users) > 1.0
    assert median_span(items) > 2.0


# ---------------------------------------------------------------- Adressa-like phenomena


def test_adressa_times_cover_exactly_21_oslo_days(adressa):
    first = datetime(2017, 1, 1, tzinfo=OSLO)
    end = datetime(2017, 1, 22, tzinfo=OSLO)
    assert adressa.times.min() >= int(first.timestamp())
    assert adressa.times.max() < int(end.timestamp())
    periods = oslo_periods(adressa.times, first)
    assert set(np.unique(periods)) == set(range(63))


def test_adressa_has_a_daily_rhythm_low_at_night(adressa):
    hours = np.array([datetime.fromtimestamp(int(t), OSLO).hour for t in adressa.times[::20]])
    share = np.bincount(hours, minlength=24) / len(hours)
    night = share[1:6].mean()  # 01:00-06:00
    day = share[8:22].mean()
    assert night < 0.25 * day


def test_adressa_items_live_less_than_a_day(adressa):
    _, items, times = time_sorted(adressa)
    assert median_half_life_hours(items, times) < 24.0


def test_adressa_test_periods_are_mostly_items_first_seen_in_that_period(adressa):
    users, items, times = time_sorted(adressa)
    periods = oslo_periods(times, datetime(2017, 1, 1, tzinfo=OSLO))
    fresh = first_period_of(items, periods) == periods
    test = periods >= 53
    assert np.mean(fresh[test]) > 0.5


def test_adressa_many_one_off_users_and_a_few_heavy_ones(adressa):
    counts = np.unique(adressa.users, return_counts=True)[1]
    assert 4.0 <= counts.mean() <= 12.0
    assert np.median(counts) <= 3
    assert np.mean(counts <= 3) > 0.5
    heavy = np.sort(counts)[::-1][: len(counts) // 10]
    assert heavy.sum() > 0.4 * counts.sum()  # the top tenth of users make a large share of clicks
    assert counts.max() >= 5 * counts.mean()
