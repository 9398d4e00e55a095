"""Dataset protocols: the paper's filters, dense ids, period cuts (equal count, Oslo day slots with
daylight saving, fixed windows), split scaling, overrides and the synthetic fallback."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from sml_sim.data import DatasetSpec, load_dataset
from sml_sim.data.base import DataError, Split, equal_count_periods

OSLO = ZoneInfo("Europe/Oslo")


def oslo_ts(y, mo, d, h, mi=0, s=0, fold=0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=OSLO, fold=fold).timestamp())


def write_adressa_day(folder, name, events):
    """events: (user, article or None, unix time, activeTime or the string 'missing')"""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w") as f:
        for user, article, ts, active in events:
            rec = {"userId": user, "time": ts, "url": "http://adressa.no/x"}
            if article is not None:
                rec["id"] = article
            if active != "missing":
                rec["activeTime"] = active
            f.write(json.dumps(rec) + "\n")


# ------------------------------------------------------------------ equal-count cut, real data


@pytest.mark.integration
def test_ml100k_ingest_reports_paper_cut(cli, ml100k, tmp_path):
    r = cli("ingest", "movielens", "--data", ml100k, "--db", f"sqlite:///{tmp_path}/x.db", "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["interactions"] == 100_000
    assert s["periods"] == 40
    assert s["train"] == [0, 29] and s["validation"] == [30, 32] and s["test"] == [33, 39]
    assert s["retrain_start"] == 10
    assert s["skipped_lines"] == 0
    assert s["users"] == 943 and s["items"] == 1682
    assert s["period_interactions"] == [2500] * 40
    for key in ("dataset", "source", "interactions", "users", "items", "periods", "train", "validation", "test",
                "retrain_start", "skipped_lines"):
        assert key in s


@pytest.mark.integration
def test_yelp_sample_with_overrides_stores_complete_reviews(cli, yelp_sample, tmp_path, db_counts):
    db = tmp_path / "y.db"
    r = cli("ingest", "yelp", "--data", yelp_sample, "--db", f"sqlite:///{db}", "--min-user-interactions", "1",
            "--min-item-interactions", "1", "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["interactions"] == 3610
    assert s["skipped_lines"] == 1
    assert s["source"].startswith("yelp (") and not s["synthetic"]
    assert s["periods"] == 40 and s["train"] == [0, 29] and s["test"] == [33, 39]
    assert db_counts(db)["interactions"] == 3610
    assert db_counts(db)["periods"] == 40


@pytest.mark.integration
def test_yelp_sample_without_overrides_exits_2(cli, yelp_sample, tmp_path, one_line_error):
    r = cli("ingest", "yelp", "--data", yelp_sample, "--db", f"sqlite:///{tmp_path}/y.db")
    line = one_line_error(r, 2)
    assert "nothing is left" in line and "--min-user-interactions" in line


# ------------------------------------------------------------------ the paper's filters (yelp)


def _yelp_line(user, business, when: datetime) -> str:
    return json.dumps({"review_id": f"r-{user}-{business}", "user_id": user, "business_id": business,
                       "stars": 4.0, "text": "ok", "date": when.strftime("%Y-%m-%d %H:%M:%S")})


def test_yelp_filters_users_below_10_items_below_20(tmp_path):
    """Users with < 10 and items with < 20 interactions (counted on the unfiltered stream) are dropped."""
    rng = np.random.default_rng(3)
    t0 = datetime(2018, 1, 1)
    recs = []
    # 'hub' items get many reviews; the boundary cases are exact.
    users = [f"user{k}" for k in range(40)]
    for k in range(1200):
        recs.append((users[k % 40], f"hub{k % 6}"))
    # an item with exactly 20 reviews (kept) and one with exactly 19 (dropped)
    recs += [(users[k], "item20") for k in range(20)]
    recs += [(users[k], "item19") for k in range(19)]
    # a user with exactly 10 reviews (kept) and one with exactly 9 (dropped), all on hub items
    recs += [("ten", f"hub{k % 6}") for k in range(10)]
    recs += [("nine", f"hub{k % 6}") for k in range(9)]
    order = rng.permutation(len(recs))
    recs = [recs[k] for k in order]
    path = tmp_path / "review.json"
    path.write_text("\n".join(_yelp_line(u, b, t0 + timedelta(minutes=7 * k)) for k, (u, b) in enumerate(recs))
                    + "\n")
    ds = load_dataset(DatasetSpec(protocol="yelp", data=str(path)))
    uc, ic = Counter(u for u, _ in recs), Counter(b for _, b in recs)
    kept = [(u, b) for u, b in recs if uc[u] >= 10 and ic[b] >= 20]
    assert len(ds.users) == len(kept)
    assert ds.n_users == len({u for u, _ in kept})
    assert ds.n_items == len({b for _, b in kept})
    assert uc["ten"] == 10 and "ten" in {u for u, _ in kept}
    assert "nine" not in {u for u, _ in kept}
    assert "item20" in {b for _, b in kept} and "item19" not in {b for _, b in kept}
    # the file's own ids survive filtering: each stored (dense) interaction maps back to a kept review
    assert sorted(zip(ds.user_raw[ds.users], ds.item_raw[ds.items])) == sorted(kept)
    assert ds.n_periods == 40 and ds.split.train == (0, 29) and ds.split.retrain_start == 10


def test_dense_ids_follow_first_appearance_in_time(tmp_path):
    # Lines out of time order: the id order must follow time, not file order.
    rows = [("u9", "m5", 500), ("u7", "m1", 100), ("u8", "m2", 300), ("u7", "m3", 200), ("u9", "m1", 400),
            ("u1", "m9", 600), ("u8", "m5", 700), ("u2", "m2", 800)]
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{m}\t5\t{t}\n" for u, m, t in rows))
    ds = load_dataset(DatasetSpec(protocol="movielens", data=str(path), periods=4, split="2/1/1",
                                  retrain_start=1))
    by_time = sorted(rows, key=lambda r: r[2])
    uid, iid = {}, {}
    for u, m, _ in by_time:
        uid.setdefault(u, len(uid))
        iid.setdefault(m, len(iid))
    assert ds.users.tolist() == [uid[u] for u, _, _ in by_time]
    assert ds.items.tolist() == [iid[m] for _, m, _ in by_time]
    assert ds.times.tolist() == [t for _, _, t in by_time]
    assert ds.user_raw.tolist() == list(uid) and ds.item_raw.tolist() == list(iid)
    # equal-count cut: 8 interactions in 4 periods of 2
    assert ds.periods.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_equal_count_periods_cover_stream_evenly():
    p = equal_count_periods(103, 10)
    counts = np.bincount(p)
    assert len(counts) == 10 and counts.sum() == 103
    assert counts.max() - counts.min() <= 1
    assert np.all(np.diff(p) >= 0)
    with pytest.raises(DataError):
        equal_count_periods(9, 10)


# ------------------------------------------------------------------ Adressa: Oslo day slots


def _slot_expectations(days):
    """(events, expected periods): probes at slot edges of each local day in ``days``."""
    events, expected = [], []
    for d, (y, mo, dd) in enumerate(days):
        probes = [((0, 0, 0), 0), ((9, 59, 59), 0), ((10, 0, 0), 1), ((16, 59, 59), 1), ((17, 0, 0), 2),
                  ((23, 59, 59), 2)]
        for (h, mi, s), slot in probes:
            events.append((f"user{len(events) % 5}", f"art{len(events) % 7}", oslo_ts(y, mo, dd, h, mi, s), 12))
            expected.append(3 * d + slot)
    return events, expected


def _check_bounds(ds, days):
    for d, (y, mo, dd) in enumerate(days):
        nxt = datetime(y, mo, dd, tzinfo=OSLO) + timedelta(days=1)
        edges = [oslo_ts(y, mo, dd, 0), oslo_ts(y, mo, dd, 10), oslo_ts(y, mo, dd, 17),
                 oslo_ts(nxt.year, nxt.month, nxt.day, 0)]
        for k in range(3):
            assert ds.period_bounds[3 * d + k] == (edges[k], edges[k + 1]), (days[d], k)


def _periods_by_time(ds, events):
    # ds is time-sorted; map every event time to its period
    lookup = dict(zip(ds.times.tolist(), ds.periods.tolist()))
    return [lookup[ts] for _, _, ts, _ in events]


def test_adressa_cut_in_oslo_time_spring_dst(tmp_path):
    days = [(2017, 3, 25), (2017, 3, 26), (2017, 3, 27)]
    events, expected = _slot_expectations(days)
    # 2017-03-26: clocks jump 02:00 -> 03:00. 01:59:59 CET and 03:00:00 CEST are one second apart.
    extra = [("user1", "art1", oslo_ts(2017, 3, 26, 1, 59, 59), 5), ("user2", "art2", oslo_ts(2017, 3, 26, 3), 5)]
    assert extra[1][2] - extra[0][2] == 1
    events += extra
    expected += [3, 3]
    folder = tmp_path / "adressa"
    for d in range(3):
        write_adressa_day(folder, f"2017032{5 + d}", [e for e, p in zip(events, expected) if p // 3 == d])
    ds = load_dataset(DatasetSpec(protocol="adressa", data=str(folder)))
    assert ds.n_periods == 9
    assert _periods_by_time(ds, events) == expected
    _check_bounds(ds, days)
    # The DST day has 23 hours: its morning slot is 9 hours long.
    start, end = ds.period_bounds[3]
    assert end - start == 9 * 3600
    assert ds.period_bounds[5][1] - ds.period_bounds[3][0] == 23 * 3600
    # 10:00 local on the 26th is 08:00 UTC (CEST), on the 25th 09:00 UTC (CET).
    assert datetime.fromtimestamp(ds.period_bounds[4][0], UTC).hour == 8
    assert datetime.fromtimestamp(ds.period_bounds[1][0], UTC).hour == 9


def test_adressa_cut_in_oslo_time_autumn_dst(tmp_path):
    days = [(2017, 10, 28), (2017, 10, 29)]
    events, expected = _slot_expectations(days)
    # 2017-10-29: 02:30 happens twice (CEST, then CET); both are in the morning slot of the 29th.
    first = oslo_ts(2017, 10, 29, 2, 30, fold=0)
    second = oslo_ts(2017, 10, 29, 2, 30, fold=1)
    assert second - first == 3600
    events += [("user3", "art3", first, 7), ("user4", "art4", second, 7)]
    expected += [3, 3]
    folder = tmp_path / "adressa"
    write_adressa_day(folder, "20171028", [e for e, p in zip(events, expected) if p < 3])
    write_adressa_day(folder, "20171029", [e for e, p in zip(events, expected) if p >= 3])
    ds = load_dataset(DatasetSpec(protocol="adressa", data=str(folder)))
    assert ds.n_periods == 6
    assert _periods_by_time(ds, events) == expected
    _check_bounds(ds, days)
    assert ds.period_bounds[5][1] - ds.period_bounds[3][0] == 25 * 3600
    assert ds.period_bounds[3][1] - ds.period_bounds[3][0] == 11 * 3600


def test_adressa_day_files_cut_at_utc_midnight_spill_into_the_evening(tmp_path):
    """Day files cut at UTC midnight end at 01:00 Oslo time (CET): the last hour is the next local
    day. It joins the evening before, instead of opening a 22nd day of one short and two empty periods."""
    folder = tmp_path / "adressa-utc"
    for d in (10, 11):
        events = [(f"u{k}", f"a{k % 4}", oslo_ts(2017, 1, d, h, k), 10) for h in (3, 12, 20) for k in range(4)]
        if d == 11:  # 23:10-23:40 UTC on the 11th = 00:10-00:40 on the 12th in Oslo
            events += [(f"u{k}", "a1", oslo_ts(2017, 1, 12, 0, 10 * (k + 1)), 10) for k in range(3)]
        write_adressa_day(folder, f"201701{d}", events)
    ds = load_dataset(DatasetSpec(protocol="adressa", data=str(folder)))
    assert ds.n_periods == 6
    assert np.diff(ds.offsets).tolist() == [4, 4, 4, 4, 4, 7]
    assert ds.period_bounds[5] == (oslo_ts(2017, 1, 11, 17), oslo_ts(2017, 1, 12, 2))
    assert any("3 event(s) in the first 2 hours of the last Oslo day" in n for n in ds.notes), ds.notes
    # the reading's version is part of the params the store fingerprints: a store holding the same
    # folder read the old way (66 periods for 21 days) is not taken for this one
    assert ds.params["reading"] == 2


def test_adressa_drops_non_articles_and_zero_reading_time(tmp_path):
    t = oslo_ts(2017, 1, 10, 12)
    day2 = oslo_ts(2017, 1, 11, 20)
    events = [
        ("a", "art1", oslo_ts(2017, 1, 10, 8), 30),  # kept
        ("b", "art2", t + 1, 1),                       # kept
        ("c", None, t + 2, 40),                        # no article id
        ("d", "", t + 3, 40),                          # empty article id
        ("e", "art3", t + 4, 0),                       # zero reading time
        ("f", "art4", t + 5, "missing"),               # missing reading time
        ("g", "art5", t + 6, None),                    # null reading time
        ("h", "art6", day2, 2.5),                      # kept
    ]
    folder = tmp_path / "adr"
    write_adressa_day(folder, "20170110", events[:7])
    write_adressa_day(folder, "20170111", events[7:])
    with open(folder / "20170110", "a") as f:
        f.write('{"userId": "broken", "time": \n')  # malformed: skipped and counted
    ds = load_dataset(DatasetSpec(protocol="adressa", data=str(folder)))
    assert len(ds.users) == 3
    assert ds.n_items == 3 and ds.n_users == 3
    assert sorted(ds.times.tolist()) == sorted([events[0][2], events[1][2], events[7][2]])
    assert sorted(ds.user_raw.tolist()) == ["a", "b", "h"] and sorted(ds.item_raw.tolist()) == ["art1", "art2", "art6"]
    assert ds.skipped_lines == 1
    assert ds.n_periods == 6
    notes = " ".join(ds.notes)
    assert "2 event(s) without an article id and 3 with zero or missing reading time" in notes, notes


def test_adressa_seven_days_split_scaled_proportionally(tmp_path):
    folder = tmp_path / "adressa7"
    for d in range(7):
        day = (2017, 1, 1 + d)
        write_adressa_day(folder, f"201701{1 + d:02d}", [
            (f"u{k}", f"a{d}-{k % 3}", oslo_ts(*day, h, 5 * k), 10) for h in (3, 12, 20) for k in range(3)])
    ds = load_dataset(DatasetSpec(protocol="adressa", data=str(folder)))
    s = ds.split
    assert s.n_periods == 21
    n_train = s.train[1] - s.train[0] + 1
    n_val = s.validation[1] - s.validation[0] + 1
    n_test = s.test[1] - s.test[0] + 1
    assert n_train + n_val + n_test == 21
    # 48/5/10 of 63, start 20: scaled by 21/63 = 1/3
    assert (n_train, n_val, n_test) == (16, 2, 3)
    assert s.retrain_start == 7
    for got, ref in ((n_val, 5), (n_test, 10), (s.retrain_start, 20)):
        assert abs(got - ref * 21 / 63) <= 0.5
    assert any("scaled" in n for n in ds.notes), ds.notes


def test_split_scaled_matches_reference_on_reference_length():
    s = Split.scaled(63, (48, 5, 10), 20)
    assert (s.train, s.validation, s.test, s.retrain_start) == ((0, 47), (48, 52), (53, 62), 20)
    s = Split.scaled(40, (30, 3, 7), 10)
    assert (s.train, s.validation, s.test, s.retrain_start) == ((0, 29), (30, 32), (33, 39), 10)


def test_split_of_labels():
    s = Split.from_counts(10, 6, 1, 3, 2)
    assert [s.split_of(t) for t in range(10)] == ["pretrain"] * 2 + ["train"] * 4 + ["validation"] + ["test"] * 3


# ------------------------------------------------------------------ csv protocol and overrides


def test_csv_iso_times_fixed_weekly_windows(cli, tmp_path):
    t0 = datetime(2020, 3, 2, 12, 0, 0)
    path = tmp_path / "events.csv"
    lines = ["who;what;when;extra"]
    offsets_days = [0, 1, 2, 6.9, 7, 8, 13, 14, 15, 20, 21.5, 22, 27, 28, 29, 30, 34.9, 35, 40, 41]
    for k, off in enumerate(offsets_days):
        lines.append(f"p{k % 4};x{k % 5};{(t0 + timedelta(days=off)).isoformat()};z")
    path.write_text("\n".join(lines) + "\n")
    db = tmp_path / "c.db"
    r = cli("ingest", "csv", "--data", path, "--delimiter", ";", "--user-col", "who", "--item-col", "what",
            "--time-col", "when", "--time-format", "iso", "--period-length", "7d", "--db", f"sqlite:///{db}",
            "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["interactions"] == len(offsets_days)
    expected = Counter(int(off // 7) for off in offsets_days)
    assert s["periods"] == 6
    assert s["period_interactions"] == [expected[k] for k in range(6)]
    r = cli("periods", "csv", "--db", f"sqlite:///{db}", "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    base = int(t0.replace(tzinfo=ZoneInfo("UTC")).timestamp())
    for row in rows:
        assert row["start"] == base + row["index"] * 7 * 86400
        assert row["end"] - row["start"] == 7 * 86400


def test_overrides_periods_split_retrain_start(cli, tmp_path, toy_stream):
    users, items, times = toy_stream(n=600)
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in zip(users, items, times)))
    r = cli("ingest", "movielens", "--data", path, "--db", f"sqlite:///{tmp_path}/o.db", "--periods", "12",
            "--split", "8/2/2", "--retrain-start", "3", "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["periods"] == 12
    assert (s["train"], s["validation"], s["test"], s["retrain_start"]) == ([0, 7], [8, 9], [10, 11], 3)
    assert s["period_interactions"] == [50] * 12
    # the split alone: retraining start defaults to the protocol's (10) capped inside training
    ds = load_dataset(DatasetSpec(protocol="movielens", data=str(path), periods=12, split="8/2/2"))
    assert ds.split.retrain_start == 7
    ds = load_dataset(DatasetSpec(protocol="movielens", data=str(path), periods=10, retrain_start=2))
    assert ds.split.retrain_start == 2 and ds.n_periods == 10


def test_min_interaction_overrides(tmp_path):
    rows = [(f"u{k % 3}", f"m{k % 2}", 100 + k) for k in range(12)] + [("lonely", "m0", 500)]
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{m}\t5\t{t}\n" for u, m, t in rows))
    ds = load_dataset(DatasetSpec(protocol="movielens", data=str(path), periods=4, split="2/1/1",
                                  retrain_start=1, min_user_interactions=2))
    assert len(ds.users) == 12 and ds.n_users == 3


# ------------------------------------------------------------------ synthetic fallback


@pytest.fixture
def synthetic_module():
    try:
        from sml_sim.data import synthetic  # noqa: F401  (written by another engineer)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"sml_sim.data.synthetic is not importable yet: {exc}")
    return synthetic


@pytest.mark.parametrize("protocol, what", [("yelp", "Yelp review file"), ("adressa", "Adressa day files")])
def test_fallback_to_synthetic_when_no_data(protocol, what, tmp_path, monkeypatch, synthetic_module):
    empty = tmp_path / "empty-data-root"
    empty.mkdir()
    monkeypatch.setenv("SML_SIM_DATA", str(empty))
    ds = load_dataset(DatasetSpec(protocol=protocol, scale=0.002, seed=1))
    assert ds.is_synthetic
    assert ds.source.startswith(f"synthetic-{protocol}")
    assert f"(no {what} at {empty}" in ds.source
    assert ds.name == protocol
    assert len(ds.users) > 0


def test_fallback_source_in_cli_summary(cli, tmp_path, synthetic_module):
    empty = tmp_path / "nothing"
    empty.mkdir()
    r = cli("ingest", "yelp", "--scale", "0.002", "--db", f"sqlite:///{tmp_path}/f.db",
            env={"SML_SIM_DATA": str(empty)})
    assert r.exit_code == 0, r.stderr
    assert "source:        synthetic-yelp" in r.stdout
    assert f"(no Yelp review file at {empty / 'yelp'}/)" in r.stdout


def test_movielens_ratings_csv_with_header(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{k % 5},{k % 9},4.0,{1_000_000 + 37 * k}\n" for k in range(24)))
    ds = load_dataset(DatasetSpec(protocol="movielens", data=str(path), periods=4, split="2/1/1", retrain_start=1))
    assert len(ds.users) == 24 and ds.n_users == 5 and ds.n_items == 9
    assert ds.times[0] == 1_000_000 and ds.skipped_lines == 0


def test_csv_without_header_by_index_tab_and_strptime(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("".join(f"i{k % 4}\tu{k % 3}\t{3 + k % 20:02d}/01/2020 10:{k % 60:02d}\n" for k in range(40)))
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, split="2/1/1", retrain_start=1,
                                  csv={"user_col": "1", "item_col": "0", "time_col": "2", "header": False,
                                       "delimiter": "tab", "time_format": "%d/%m/%Y %H:%M"}))
    assert len(ds.users) == 40 and ds.n_users == 3 and ds.n_items == 4
    assert ds.times[0] == int(datetime(2020, 1, 3, 10, 0, tzinfo=UTC).timestamp())


def test_csv_unix_ms_times(tmp_path):
    path = tmp_path / "ms.csv"
    path.write_text("user,item,time\n" + "".join(f"u{k % 3},i{k % 4},{1_600_000_000_000 + 1500 * k}\n"
                                                 for k in range(20)))
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, split="2/1/1", retrain_start=1,
                                  csv={"time_format": "unix-ms"}))
    assert ds.times[0] == 1_600_000_000 and ds.times[-1] == 1_600_000_000 + (1500 * 19) // 1000


def test_fixed_windows_with_empty_periods_say_so(tmp_path):
    """Days with no data under --period-length 1d give periods with nothing to train on or score: the
    dataset says which (run and ingest print it); the methods keep their models through them."""
    path = tmp_path / "gaps.csv"
    rows = ["user,item,time"]
    for day in range(30):
        if day % 3 == 2:  # every third day empty
            continue
        rows += [f"{k % 7},{k % 11},{1_700_000_000 + day * 86400 + k * 60}" for k in range(20)]
    path.write_text("\n".join(rows) + "\n")
    spec = DatasetSpec("csv", data=str(path), period_length="1d", min_user_interactions=1,
                       min_item_interactions=1)
    notes = load_dataset(spec).notes
    assert any("on have no interactions (periods " in n and "--period-length than 1d" in n
               for n in notes), notes
    spec.period_length = "2d"  # two-day windows cover the gaps
    ds = load_dataset(spec)
    assert ds.n_periods == 15 and not any("no interactions" in n for n in ds.notes)


def test_csv_options_on_a_synthetic_stream_are_refused_not_ignored():
    from sml_sim.data import check_spec

    with pytest.raises(DataError, match="csv column options apply to the csv dataset, not synthetic-yelp"):
        check_spec(DatasetSpec("synthetic-yelp", csv={"user_col": "u"}))


def test_movielens_finds_its_ratings_file_in_a_folder(tmp_path, monkeypatch, one_line_error, cli):
    """data/movielens/ may hold ratings.csv (ML-20M and later) instead of u.data; --data may name the folder."""
    folder = tmp_path / "data" / "movielens"
    folder.mkdir(parents=True)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},4,{880_000_000 + 60 * (u * 13 + i)}\n" for u in range(12) for i in range(12)))
    spec = DatasetSpec(protocol="movielens", data=str(folder), periods=4, split="2/1/1", retrain_start=1)
    assert len(load_dataset(spec).users) == 144
    monkeypatch.setenv("SML_SIM_DATA", str(tmp_path / "data"))
    assert len(load_dataset(DatasetSpec(protocol="movielens", periods=4, split="2/1/1", retrain_start=1)).users) == 144
    (folder / "ratings.csv").unlink()
    r = cli("ingest", "movielens", "--db", f"sqlite:///{tmp_path}/m.db")
    one_line_error(r, 2, contains="(u.data, ratings.dat, ratings.csv) in")


def test_a_split_too_short_for_the_protocols_start_says_where_retraining_starts():
    ds = load_dataset(DatasetSpec(protocol="synthetic-yelp", scale=0.005, split="2/3/35"))
    assert ds.split.retrain_start == 1
    assert any("retraining from period 1" in n and "--split 2/3/35" in n for n in ds.notes), ds.notes
    ds = load_dataset(DatasetSpec(protocol="synthetic-yelp", scale=0.005, split="30/3/7"))
    assert not any("--split" in n for n in ds.notes), ds.notes


def test_the_split_hint_is_always_accepted_with_the_retraining_start_given():
    """The hint ignored --retrain-start: 10/10/10 with start 20 suggested 14/13/13, then refused it."""
    from sml_sim.data.base import DataError, Split

    shown = 0
    for n in range(4, 60):
        for counts in [(10, 10, 10), (30, 3, 7), (5, 1, 2), (3, 0, 1), (14, 7, 14)]:
            for start in (1, 2, 10, 20):
                if sum(counts) == n:
                    continue
                with pytest.raises(DataError) as exc:
                    Split.from_counts(n, *counts, start)
                if "with the same shares" in str(exc.value):
                    shown += 1
                    hint = str(exc.value).split("with the same shares, ")[1].split(" does")[0]
                    Split.from_counts(n, *map(int, hint.split("/")), start)  # accepted
    assert shown > 500
