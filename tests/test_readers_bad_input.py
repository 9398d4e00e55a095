"""Bad input: each gives exit code 2 and one clear line (or, where skipping is right, a count of what
was skipped), never a traceback; a failed ingest leaves the store as it was."""

from __future__ import annotations

import json

import pytest

from sml_sim.data import DatasetSpec, load_dataset
from sml_sim.data.base import DataError


def _movielens_file(path, n=40, bad_lines=()):
    lines = [f"{k % 7}\t{k % 11}\t3\t{1000 + 10 * k}" for k in range(n)]
    for pos, text in bad_lines:
        lines.insert(pos, text)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def populated_db(cli, tmp_path, db_counts):
    """A store that already holds one dataset; returns (db url, db file, counts before)."""
    db = tmp_path / "store.db"
    src = _movielens_file(tmp_path / "good.data", n=80)
    r = cli("ingest", "movielens", "--data", src, "--db", f"sqlite:///{db}", "--periods", "8", "--split", "5/1/2",
            "--retrain-start", "2")
    assert r.exit_code == 0, r.stderr
    before = db_counts(db)
    assert before["interactions"] == 80 and before["periods"] == 8 and before["datasets"] == 1
    return f"sqlite:///{db}", db, before


def _bad_inputs(tmp_path):
    """(name, argv) of ingests that must fail with exit 2."""
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    missing_col = tmp_path / "missing_col.csv"
    missing_col.write_text("user,item,stamp\na,b,1\nc,d,2\n")
    bad_times = tmp_path / "bad_times.csv"
    bad_times.write_text("user,item,time\n" + "".join(f"u{k},i{k},yesterday\n" for k in range(10)))
    few = _movielens_file(tmp_path / "few.data", n=12)
    sparse = tmp_path / "sparse.json"
    sparse.write_text("".join(json.dumps({"user_id": f"u{k}", "business_id": f"b{k}",
                                          "date": f"2019-01-0{1 + k % 9} 10:00:00"}) + "\n" for k in range(30)))
    ok = _movielens_file(tmp_path / "ok.data", n=60)
    ms = tmp_path / "ms.csv"
    ms.write_text("user,item,time\n" + "".join(f"u{k % 3},i{k % 4},{1_700_000_000_000 + 1000 * k}\n"
                                                 for k in range(12)))
    tsv = tmp_path / "u.tsv"
    tsv.write_text("".join(f"{196 + k % 3}\t{242 + k % 4}\t3\t{881250949 + k}\n" for k in range(12)))
    garbage = tmp_path / "garbage.data"
    garbage.write_text("hello world\nfoo bar\n")
    import gzip

    gz = tmp_path / "packed.csv.gz"
    gz.write_bytes(gzip.compress(b"user,item,time\nu1,i1,1700000000\n"))
    utf16 = tmp_path / "utf16.csv"
    utf16.write_text("user,item,time\nu1,i1,1700000000\n", encoding="utf-16")
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n\n")
    same_time = tmp_path / "same_time.csv"
    same_time.write_text("user,item,time\n" + "".join(f"u{k % 3},i{k % 4},1700000000\n" for k in range(20)))
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("user,item,time\n" + "".join(f"u{k % 3},i{k % 4},{1_700_000_000 + k}\n" for k in range(20)))
    return [
        ("csv millisecond times read as seconds", ["ingest", "csv", "--data", ms, "--periods", "4"],
         "--time-format unix-ms"),
        ("csv tab-separated read with commas", ["ingest", "csv", "--data", tsv], "--delimiter tab"),
        ("csv same column for two roles", ["ingest", "csv", "--data", tiny, "--user-col", "item", "--item-col",
                                           "item", "--periods", "4"], "both the user and the item column"),
        ("csv fewer rows than the default periods", ["ingest", "csv", "--data", tiny], "--periods N"),
        ("missing file", ["ingest", "movielens", "--data", tmp_path / "nope.data"], "no MovieLens ratings file"),
        ("missing folder", ["ingest", "adressa", "--data", tmp_path / "nope_dir"], "no Adressa folder"),
        ("folder with no day files", ["ingest", "adressa", "--data", empty_dir], "no Adressa day files"),
        ("file instead of folder", ["ingest", "adressa", "--data", ok], "expected the folder"),
        ("folder without a ratings file", ["ingest", "movielens", "--data", empty_dir],
         "(u.data, ratings.dat, ratings.csv) in"),
        ("folder instead of file", ["ingest", "yelp", "--data", empty_dir], "is a folder"),
        ("csv missing column", ["ingest", "csv", "--data", missing_col], "time"),
        ("all timestamps unparsable", ["ingest", "csv", "--data", bad_times, "--time-format", "iso"],
         "none of the 10 rows"),
        ("nothing left after filtering", ["ingest", "yelp", "--data", sparse], "nothing is left"),
        ("fewer interactions than periods", ["ingest", "movielens", "--data", few], "fewer than the 40 periods"),
        ("bad split form", ["ingest", "movielens", "--data", ok, "--periods", "6", "--split", "4-1-1"],
         "TRAIN/VALIDATION/TEST"),
        ("split of two parts", ["ingest", "movielens", "--data", ok, "--periods", "6", "--split", "5/1"],
         "TRAIN/VALIDATION/TEST"),
        ("split not adding up", ["ingest", "movielens", "--data", ok, "--periods", "6", "--split", "3/1/1"],
         "does not add up"),
        ("retrain start outside training", ["ingest", "movielens", "--data", ok, "--periods", "6", "--split",
                                            "4/1/1", "--retrain-start", "4"], "retraining start"),
        ("too few periods", ["ingest", "movielens", "--data", ok, "--periods", "2"], "at least 4 periods"),
        ("bad period length", ["ingest", "movielens", "--data", ok, "--period-length", "soon"], "period length"),
        ("period length under a second", ["ingest", "movielens", "--data", ok, "--period-length", "0.4s"],
         "one-second resolution"),
        ("period length longer than the data", ["ingest", "csv", "--data", tiny, "--period-length", "7d"],
         "cuts 19 second(s) of data into 1 period(s); at least 4 are needed (train, validation, test): try "
         "--period-length 1s"),
        ("one time for every interaction", ["ingest", "csv", "--data", same_time, "--period-length", "7d"],
         "every interaction has the same time"),
        ("misspelt time format", ["ingest", "csv", "--data", tiny, "--time-format", "unix-s"],
         "--time-format 'unix-s' is not unix, unix-ms, iso or a strptime pattern"),
        ("period length in months", ["ingest", "csv", "--data", tiny, "--period-length", "1M"], "is not a duration"),
        ("csv gzip-compressed", ["ingest", "csv", "--data", gz], "is gzip-compressed: unpack it first, e.g. gzip -dc"),
        ("csv saved as UTF-16", ["ingest", "csv", "--data", utf16], "holds UTF-16 text or binary data"),
        ("csv that is JSON lines", ["ingest", "csv", "--data", sparse], "looks like JSON lines"),
        ("csv of blank lines", ["ingest", "csv", "--data", blank], "the first line of"),
        ("period length of a fractional second", ["ingest", "movielens", "--data", ok, "--period-length", "1.5s"],
         "not a whole number of seconds, the resolution of the times: try 2s"),
        ("more periods than interactions", ["ingest", "movielens", "--data", ok, "--period-length", "1s"],
         "more than its 60 interactions; try --period-length"),
        ("movielens file of another format", ["ingest", "movielens", "--data", garbage], "expected u.data (user, item"),
        ("csv delimiter of two characters", ["ingest", "csv", "--data", tiny, "--delimiter", "::"], "one character"),
        ("csv empty delimiter", ["ingest", "csv", "--data", tiny, "--delimiter", ""], "one character"),
        ("unknown dataset", ["ingest", "netflix", "--data", ok], "is neither a dataset"),
        ("csv without --data", ["ingest", "csv"], "needs --data"),
        ("non-positive scale", ["ingest", "synthetic-yelp", "--scale", "0"], "--scale"),
    ]


def test_each_bad_input_exits_2_with_one_line(cli, tmp_path, one_line_error):
    failures = []
    for name, argv, needle in _bad_inputs(tmp_path):
        r = cli(*argv, "--db", f"sqlite:///{tmp_path}/fresh.db")
        try:
            one_line_error(r, 2, contains=needle)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


def test_failed_ingests_leave_store_unchanged(cli, tmp_path, populated_db, db_counts):
    url, db, before = populated_db
    for name, argv, _ in _bad_inputs(tmp_path):
        r = cli(*argv, "--db", url)
        assert r.exit_code == 2, (name, r.stderr)
        assert db_counts(db) == before, name


def test_failed_ingest_does_not_create_a_store(cli, tmp_path):
    db = tmp_path / "never.db"
    r = cli("ingest", "movielens", "--data", tmp_path / "missing.data", "--db", f"sqlite:///{db}")
    assert r.exit_code == 2
    assert not db.exists()


def test_ingest_failing_while_writing_leaves_store_as_it_was(cli, tmp_path, populated_db, db_counts):
    """A failure while the periods are written (disk full, a lock, ctrl-C) must not leave a
    half-registered dataset behind: `periods NAME` would then show an empty dataset. The failure is
    made by the database itself (a trigger), whatever the code path."""
    import sqlite3

    url, db, before = populated_db
    con = sqlite3.connect(db)
    con.execute("CREATE TRIGGER simulated_disk_full BEFORE INSERT ON interactions WHEN NEW.dataset_id <> 1 "
                "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END")
    con.commit()
    con.close()
    other = _movielens_file(tmp_path / "other.data", n=120)
    r = cli("ingest", "movielens", "--data", other, "--db", url, "--periods", "6", "--split", "4/1/1",
            "--retrain-start", "1")
    assert r.exit_code != 0
    assert "Traceback" not in r.stderr
    assert db_counts(db) == before
    r = cli("periods", "movielens", "--db", url, "--json")
    assert len(json.loads(r.stdout)) == 8, "the latest dataset of that name must still be the complete one"


# ------------------------------------------------------------------ skipped and counted


def test_malformed_movielens_lines_are_skipped_and_counted(cli, tmp_path):
    path = _movielens_file(tmp_path / "u.data", n=40, bad_lines=[(3, "garbage"), (10, "1\t2\t3\tnot-a-time"),
                                                                  (20, "x\ty\tz\tw"), (25, "5\t6")])
    r = cli("ingest", "movielens", "--data", path, "--db", f"sqlite:///{tmp_path}/m.db", "--periods", "4",
            "--split", "2/1/1", "--retrain-start", "1", "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["interactions"] == 40
    assert s["skipped_lines"] == 4
    r = cli("ingest", "movielens", "--data", path, "--db", f"sqlite:///{tmp_path}/m.db", "--periods", "4",
            "--split", "2/1/1", "--retrain-start", "1")
    assert r.exit_code == 0
    assert "skipped lines: 4" in r.stdout


def _yelp_lines(n):
    return [json.dumps({"review_id": str(k), "user_id": f"u{k % 5}", "business_id": f"b{k % 3}",
                        "date": f"2019-02-{1 + k % 27:02d} 0{k % 10}:00:00"}) for k in range(n)]


def test_yelp_truncated_last_line_is_skipped(tmp_path):
    lines = _yelp_lines(50)
    path = tmp_path / "review.json"
    path.write_text("\n".join(lines) + "\n" + lines[0][:37])  # cut off mid-record, no newline
    ds = load_dataset(DatasetSpec(protocol="yelp", data=str(path), min_user_interactions=1,
                                  min_item_interactions=1, periods=5, split="3/1/1", retrain_start=1))
    assert len(ds.users) == 50
    assert ds.skipped_lines == 1
    assert any("skipped 1" in n for n in ds.notes)


def test_yelp_malformed_lines_are_skipped(tmp_path):
    lines = _yelp_lines(30)
    lines.insert(4, "{not json")
    lines.insert(8, json.dumps({"user_id": "u1", "date": "2019-02-01 00:00:00"}))  # no business_id
    lines.insert(12, json.dumps({"user_id": "u1", "business_id": "b1", "date": "someday"}))
    lines.insert(14, json.dumps({"user_id": 7, "business_id": "b1", "date": "2019-02-01 00:00:00"}))
    lines.insert(16, "")
    path = tmp_path / "review.json"
    path.write_text("\n".join(lines) + "\n")
    ds = load_dataset(DatasetSpec(protocol="yelp", data=str(path), min_user_interactions=1,
                                  min_item_interactions=1, periods=5, split="3/1/1", retrain_start=1))
    assert len(ds.users) == 30
    assert ds.skipped_lines == 4


def test_unparsable_timestamps_skipped_and_counted(cli, tmp_path):
    rows = [f"u{k % 4},i{k % 6},2021-01-{1 + k % 28:02d}T10:00:00" for k in range(30)]
    rows[5] = "u1,i1,not-a-date"
    rows[9] = "u2,i2,"
    rows[17] = "u3,i3,2021-13-45T99:00:00"
    path = tmp_path / "t.csv"
    path.write_text("user,item,time\n" + "\n".join(rows) + "\n")
    r = cli("ingest", "csv", "--data", path, "--time-format", "iso", "--periods", "5", "--split", "3/1/1",
            "--retrain-start", "1", "--db", f"sqlite:///{tmp_path}/t.db", "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["interactions"] == 27 and s["skipped_lines"] == 3


def test_csv_short_rows_and_missing_ids_skipped(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user,item,time\n" + "\n".join(
        ["a,x,10", "b,y", ",z,30", "c,,40", "d,w,50", "e,v,60", "f,u,70", "g,t,80"]) + "\n")
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, split="2/1/1", retrain_start=1))
    assert len(ds.users) == 5 and ds.skipped_lines == 3


def test_csv_missing_column_message_names_it(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("user,item,when\na,b,1\n")
    with pytest.raises(DataError, match="no time column 'time'"):
        load_dataset(DatasetSpec(protocol="csv", data=str(path)))


def _csv(path, rows, header="user,item,time", **kw):
    path.write_text((header + "\n" if header else "") + "".join(rows), **kw)
    return path


def test_ids_with_bytes_that_are_not_utf8_stay_apart_and_are_noted(tmp_path):
    """Read with errors="replace", Latin-1 'caf\\xe9' and 'caf\\xfc' both became 'caf\\ufffd': one user."""
    path = _csv(tmp_path / "latin1.csv", [f"u{k % 5},i{k % 7},{1_700_000_000 + 3600 * k}\n" for k in range(40)])
    with open(path, "ab") as f:
        f.write(b"caf\xe9,x\xe9,1700200000\ncaf\xfc,x\xfc,1700200001\n")
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, min_user_interactions=1, min_item_interactions=1))
    assert ds.n_users == 7 and ds.n_items == 9
    assert {"caf\\xe9", "caf\\xfc"} <= set(ds.user_raw) and {"x\\xe9", "x\\xfc"} <= set(ds.item_raw)
    assert any("4 user/item id(s) hold bytes that are not UTF-8 (first: 'caf\\xe9')" in n for n in ds.notes), ds.notes


def test_a_row_with_extra_fields_is_skipped_not_read_shifted(tmp_path):
    """1,2,3,4,5 under user,item,time was read as time 3 (1970), stretching the periods over decades.
    Trailing empty fields (a delimiter at the end of each row) are not extra."""
    rows = [f"u{k % 5},i{k % 7},{1_700_000_000 + 3600 * k}\n" for k in range(40)]
    path = _csv(tmp_path / "extra.csv", rows[:20] + ["1,2,3,4,5\n"] + [r.replace("\n", ",\n") for r in rows[20:]])
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, min_user_interactions=1, min_item_interactions=1))
    assert len(ds.users) == 40 and ds.skipped_lines == 1 and ds.times.min() >= 1_700_000_000
    assert any("(first: line 22: '1,2,3,4,5')" in n for n in ds.notes), ds.notes


def test_rows_wider_than_the_header_are_read_when_that_is_the_files_shape(tmp_path):
    """A header naming fewer columns than every row has is the file's shape, not shifted rows; and a
    headerless file's title line does not set a width the other rows then exceed."""
    wide = _csv(tmp_path / "wide.csv", [f"u{k % 5},i{k % 7},{1_700_000_000 + 3600 * k},4\n" for k in range(40)])
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(wide), periods=4))
    assert len(ds.users) == 40 and any("40 of 40 rows have more fields than the header names (3)" in n
                                       for n in ds.notes), ds.notes
    titled = _csv(tmp_path / "titled.csv", [f"u{k % 5},i{k % 7},{1_700_000_000 + 3600 * k}\n" for k in range(40)],
                  header="# ratings export")
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(titled), periods=4,
                                  csv={"header": False, "user_col": "0", "item_col": "1", "time_col": "2"}))
    assert len(ds.users) == 40 and ds.skipped_lines == 1


@pytest.mark.parametrize("stamp, fmt", [("1997092{k}", "%Y%m%d"), ("1997092{k}030510", "%Y%m%d%H%M%S")])
def test_dates_written_as_digits_are_pointed_out_not_read_as_seconds(tmp_path, stamp, fmt):
    """19970920 read as unix seconds is a plausible time (August 1970): every period squeezed into days."""
    path = _csv(tmp_path / "digits.csv", [f"u{k % 5},i{k % 7},{stamp.format(k=k % 9)}\n" for k in range(40)])
    with pytest.raises(DataError, match=f"look like dates written as .*: try --time-format {fmt}$"):
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4))
    ok = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={"time_format": fmt}))
    assert len(ok.users) == 40 and ok.times.min() > 870_000_000


def test_unit_and_delimiter_names_in_upper_case_are_read(tmp_path):
    path = _csv(tmp_path / "t.tsv", [f"u{k % 5}\ti{k % 7}\t{1_700_000_000 + 3600 * k}\n" for k in range(40)],
                header="user\titem\ttime")
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), period_length="6H", csv={"delimiter": "TAB"}))
    assert len(ds.users) == 40 and ds.split.n_periods == 7


def test_csv_millisecond_times_refused_with_hint(tmp_path):
    path = _csv(tmp_path / "ms.csv", [f"u{k % 3},i{k % 4},{1_700_000_000_000 + 1000 * k}\n" for k in range(12)])
    with pytest.raises(DataError) as exc:
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4))
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg and "'time'" in msg and "1700000000000" in msg
    assert "try --time-format unix-ms" in msg
    ok = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={"time_format": "unix-ms"}))
    assert len(ok.users) == 12


def test_csv_times_outside_1900_2200_refused_or_skipped_when_stray(tmp_path):
    good = [f"u{k % 3},i{k % 4},2021-01-{1 + k:02d}T10:00:00\n" for k in range(11)]
    # one stray value among good ones: skipped like a malformed line, and said
    path = _csv(tmp_path / "stray.csv", good + ["u1,i1,2999-01-01T00:00:00\n"])
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={"time_format": "iso"}))
    assert len(ds.users) == 11 and ds.skipped_lines == 1
    assert any("skipped 1 line(s) whose time is 0 or outside the years 1900-2200" in n for n in ds.notes), ds.notes
    # many: the file is refused, without guessing a unit from one value
    path = _csv(tmp_path / "far.csv", good[:6] + ["u1,i1,2999-01-01T00:00:00\n"] * 6)
    with pytest.raises(DataError, match=r"far\.csv: 6 of 12 .*'time'.*1900.*2200") as exc:
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={"time_format": "iso"}))
    assert "look like" not in str(exc.value)
    path = _csv(tmp_path / "big.csv", [f"u{k % 3},i{k % 4},{10 ** 20 + k}\n" for k in range(12)])
    with pytest.raises(DataError, match="1900"):  # too big even for int64: refused, not a crash
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4))


def test_movielens_and_yelp_impossible_times_refused(tmp_path):
    ml = tmp_path / "u.data"
    ml.write_text("".join(f"{k % 7}\t{k % 11}\t3\t{881250949000 + k}\n" for k in range(12)))
    with pytest.raises(DataError, match="u.data.*milliseconds"):
        load_dataset(DatasetSpec(protocol="movielens", data=str(ml), periods=4))
    old = json.dumps({"user_id": "u1", "business_id": "b1", "date": "1850-01-01 00:00:00"})
    yelp = tmp_path / "review.json"
    yelp.write_text("\n".join(_yelp_lines(12) + [old] * 4) + "\n")
    with pytest.raises(DataError, match="review.json: 4 of 16 .*1850"):
        load_dataset(DatasetSpec(protocol="yelp", data=str(yelp), min_user_interactions=1,
                                 min_item_interactions=1, periods=4))


def test_csv_utf8_bom_header_is_read(tmp_path):
    path = _csv(tmp_path / "excel.csv", [f"u{k % 3},i{k % 4},{1_700_000_000 + k}\n" for k in range(12)],
                encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfuser")
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4))
    assert len(ds.users) == 12 and ds.skipped_lines == 0


@pytest.mark.parametrize("sep, hint", [("\t", "try --delimiter tab"), (";", "try --delimiter ';'")])
def test_csv_wrong_delimiter_hint(tmp_path, sep, hint):
    path = _csv(tmp_path / "x.csv", [f"u{k % 3}{sep}i{k % 4}{sep}{1_700_000_000 + k}\n" for k in range(12)],
                header=sep.join(["user", "item", "time"]))
    with pytest.raises(DataError) as exc:
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4))
    assert hint in str(exc.value) and "\t" not in str(exc.value)


def test_csv_headerless_file_hint(tmp_path):
    path = _csv(tmp_path / "x.csv", [f"{k % 3},{k % 4},{1_700_000_000 + k}\n" for k in range(12)], header=None)
    with pytest.raises(DataError, match="no header line\\? try --no-header"):
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4))
    tsv = _csv(tmp_path / "u.tsv", [f"{k % 3}\t{k % 4}\t3\t{1_700_000_000 + k}\n" for k in range(12)], header=None)
    with pytest.raises(DataError, match="--delimiter tab.*--no-header"):
        load_dataset(DatasetSpec(protocol="csv", data=str(tsv), periods=4))


def test_csv_same_column_for_two_roles_refused(tmp_path):
    path = _csv(tmp_path / "x.csv", [f"u{k % 3},i{k % 4},{1_700_000_000 + k}\n" for k in range(12)])
    with pytest.raises(DataError, match="'item' is both the user and the item column"):
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4,
                                 csv={"user_col": "item", "item_col": "item"}))
    with pytest.raises(DataError, match="is both the item and the time column"):  # by name and by index
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={"time_col": "1"}))


def test_too_few_rows_for_default_periods_names_file_and_flag(tmp_path):
    path = _csv(tmp_path / "tiny.csv", [f"u{k % 3},i{k % 4},{1_700_000_000 + k}\n" for k in range(20)])
    with pytest.raises(DataError) as exc:
        load_dataset(DatasetSpec(protocol="csv", data=str(path)))
    msg = str(exc.value)
    assert str(path) in msg and "20 interactions" in msg and "40 periods" in msg
    assert "default" in msg and "--periods N" in msg
    with pytest.raises(DataError, match="fewer than the 30 periods asked for with --periods 30"):
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=30))


# ------------------------------------------------------------------ bad --db


@pytest.mark.parametrize("url_kind", ["unknown dialect", "missing folder", "not a url", "a folder"])
def test_bad_db_url_exits_2(cli, tmp_path, one_line_error, url_kind):
    url = {
        "unknown dialect": "nosuchdb://user@host/x",
        "missing folder": f"sqlite:///{tmp_path}/no/such/folder/x.db",
        "not a url": "sqlite:::://",
        "a folder": f"sqlite:///{tmp_path}",
    }[url_kind]
    for argv in (["runs"], ["periods", "movielens"]):
        r = cli(*argv, "--db", url)
        one_line_error(r, 2)
    ok = _movielens_file(tmp_path / "ok.data", n=60)
    r = cli("ingest", "movielens", "--data", ok, "--periods", "6", "--db", url)
    one_line_error(r, 2)


@pytest.mark.parametrize("command", [["ingest", "movielens", "--data", "{ok}", "--periods", "6"],
                                     ["run", "movielens", "--data", "{ok}", "--periods", "6", "--methods", "pop"]])
@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_store_is_refused_where_it_would_lose_the_work(cli, tmp_path, one_line_error, command, url):
    """`run --db sqlite://` reported success and kept nothing."""
    ok = _movielens_file(tmp_path / "ok.data", n=60)
    argv = [a.format(ok=ok) for a in command]
    one_line_error(cli(*argv, "--db", url), 2, contains="is an in-memory database")


def test_an_empty_out_is_refused(cli, tmp_path, one_line_error):
    ok = _movielens_file(tmp_path / "ok.data", n=60)
    one_line_error(cli("run", "movielens", "--data", ok, "--periods", "6", "--out", "", "--db",
                       f"sqlite:///{tmp_path}/e.db"), 2, contains="--out needs a file name")


def test_db_file_that_is_not_a_database_exits_2(cli, tmp_path, one_line_error):
    junk = tmp_path / "junk.db"
    junk.write_text("this is not an SQLite database, just some text that is long enough to have a header\n")
    r = cli("runs", "--db", f"sqlite:///{junk}")
    one_line_error(r, 2)


def test_bad_input_in_a_real_process_is_one_line(sml_sim, tmp_path, one_line_error):
    p = sml_sim("ingest", "movielens", "--data", tmp_path / "absent.data", "--db", f"sqlite:///{tmp_path}/p.db")
    line = one_line_error(p, 2, contains="no MovieLens ratings file")
    assert str(tmp_path / "absent.data") in line
    p = sml_sim("ingest", "adressa", "--data", tmp_path, "--db", f"sqlite:///{tmp_path}/p.db")
    one_line_error(p, 2, contains="holds no Adressa day files")


def test_exact_duplicate_rows_are_kept_and_counted(tmp_path):
    rows = [f"u{k % 3},i{k % 4},{1_700_000_000 + k}\n" for k in range(12)]
    path = _csv(tmp_path / "dup.csv", rows + rows[:3])
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4))
    assert len(ds.users) == 15
    assert any(n.startswith("3 interaction(s) repeat an earlier one exactly") for n in ds.notes), ds.notes
    assert not any("repeat" in n for n in load_dataset(DatasetSpec(protocol="csv", data=str(_csv(
        tmp_path / "once.csv", rows)), periods=4)).notes)


def test_unix_seconds_read_as_milliseconds_are_pointed_out(tmp_path):
    path = _csv(tmp_path / "s.csv", [f"u{k % 3},i{k % 4},{1_700_000_000 + k * 3600}\n" for k in range(12)])
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={"time_format": "unix-ms"}))
    assert any("first two months of 1970" in n and "--time-format unix" in n for n in ds.notes), ds.notes
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4))
    assert not any("1970" in n for n in ds.notes)


def test_a_time_of_zero_is_a_missing_time_not_1970(tmp_path):
    rows = [f"u{k % 3},i{k % 4},{880_000_000 + k * 86400}\n" for k in range(12)]
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(_csv(tmp_path / "z.csv", rows + ["u1,i1,0\n"])),
                                  period_length="2d"))
    assert len(ds.users) == 12 and ds.n_periods == 6  # not ~5,000 two-day periods back to 1970
    assert any("time is 0 or outside" in n for n in ds.notes), ds.notes


def _udata_like(path, n=1200):
    """Like MovieLens u.data: tab-separated user, item, rating (1-5), unix seconds; no header."""
    rows = [f"{196 + k % 97}\t{242 + (k * 7) % 301}\t{1 + k % 5}\t{874_724_710 + k * 13_337}\n" for k in range(n)]
    return _csv(path, rows, header=None)


def test_csv_headerless_hint_guesses_the_time_column(tmp_path):
    """u.data read as csv: the hint names column 3 (the unix time) as the time, not column 2 (the
    rating), which, read as seconds, put 100,000 interactions within 5 seconds of 1970."""
    path = _udata_like(tmp_path / "u.data")
    # the examples are whole: copied as shown, they read the file (--no-header included)
    for opts, needle in (({}, "--no-header --delimiter tab --user-col 0 --item-col 1 --time-col 3"),
                         ({"delimiter": "tab"}, "--no-header with 0-based column indices, e.g. --no-header "
                                                "--delimiter tab --user-col 0 --item-col 1 --time-col 3"),
                         ({"delimiter": "tab", "header": False}, "--user-col 0 --item-col 1 --time-col 3")):
        with pytest.raises(DataError) as exc:
            load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv=opts))
        msg = str(exc.value)
        assert needle in msg and "column 3 reads as the time 1997-" in msg, (opts, msg)
        assert "--time-col 2" not in msg and "\n" not in msg and "\t" not in msg, msg
    # the suggested flags read the file
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={
        "delimiter": "tab", "header": False, "user_col": "0", "item_col": "1", "time_col": "3"}))
    assert len(ds.users) == 1200
    # no field looks like a time (all minutes after 1970 as unix seconds): the generic example stays
    small = _csv(tmp_path / "small.csv", [f"{k % 3},{k % 4},{1 + k % 5}\n" for k in range(12)], header=None)
    with pytest.raises(DataError, match="e.g. --no-header --user-col 0 --item-col 1 --time-col 2\\)") as exc:
        load_dataset(DatasetSpec(protocol="csv", data=str(small), periods=4))
    assert "reads as the time" not in str(exc.value)


def test_csv_times_unlike_an_interaction_log_get_a_note(tmp_path):
    path = _udata_like(tmp_path / "u.data")
    cols = {"delimiter": "tab", "header": False, "user_col": "0", "item_col": "1"}
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={**cols, "time_col": "2"}))
    assert len(ds.users) == 1200  # a note, not a refusal
    note = [n for n in ds.notes if "--time-col" in n]
    assert len(note) == 1, ds.notes
    assert "column 2 (0-based)" in note[0] and "span 4 second(s)" in note[0], note
    assert "5 distinct value(s)" in note[0] and "--time-format unix" in note[0] and "\n" not in note[0], note
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={**cols, "time_col": "3"}))
    assert not any("--time-col" in n or "distinct" in n for n in ds.notes), ds.notes
    # a short span alone (distinct times, all within minutes) is also pointed out, naming the column
    rows = [f"u{k % 7},i{k % 11},{1_700_000_000 + 3 * k}\n" for k in range(200)]
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(_csv(tmp_path / "burst.csv", rows)), periods=4))
    assert any("'time'" in n and "span 9.95 minute(s)" in n and "200 distinct" in n for n in ds.notes), ds.notes


def test_a_daily_log_over_a_week_gets_no_time_column_note(tmp_path):
    """Dates without a time of day are coarse, not a wrong column: 2,000 rows over 7 days say nothing."""
    rows = [f"u{k % 50},i{k % 40},2024-03-0{1 + k % 7}\n" for k in range(2000)]
    path = _csv(tmp_path / "daily.csv", rows)
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=7, csv={"time_format": "%Y-%m-%d"}))
    assert not any("distinct" in n for n in ds.notes), ds.notes


def test_a_header_of_numbers_is_data_and_refused(tmp_path):
    """u.data read with --delimiter tab and column '3': the first row was taken as the header and '3'
    matched the rating's value by name; now the file is refused with the flags that read it."""
    rows = [f"{k % 40}\t{k % 50}\t{1 + k % 5}\t{880_000_000 + 60 * k}\n" for k in range(300)]
    path = _csv(tmp_path / "u.data", rows, header="")
    with pytest.raises(DataError, match="not a header but data") as exc:
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4,
                                 csv={"delimiter": "tab", "user_col": "0", "item_col": "1", "time_col": "3"}))
    assert "--no-header --delimiter tab --user-col 0 --item-col 1 --time-col 3" in str(exc.value)


def test_a_missing_column_names_the_header_name_that_reads_like_it(tmp_path):
    path = _csv(tmp_path / "r.csv", [f"{k},{k % 7},4,{880_000_000 + k}\n" for k in range(20)],
                header="userId,movieId,rating,timestamp")
    with pytest.raises(DataError, match=r"no time column 'time' .*--time-col timestamp\?"):
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={"user_col": "userId",
                                                                                "item_col": "movieId"}))


def test_a_column_index_past_a_headerless_files_columns_is_named(tmp_path):
    rows = [f"{k % 40}\t{k % 50}\t{1 + k % 5}\t{880_000_000 + 60 * k}\n" for k in range(30)]
    path = _csv(tmp_path / "u.data", rows, header="")
    with pytest.raises(DataError, match=r"column index 7 is beyond the 4 columns of its rows \(0-based: 0 to 3\)"):
        load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4, csv={
            "delimiter": "tab", "header": False, "user_col": "7", "item_col": "1", "time_col": "3"}))


def test_a_data_root_that_does_not_exist_is_an_error_not_synthetic_data(cli, tmp_path, monkeypatch, one_line_error):
    """Without data, yelp replays its synthetic stream; an SML_SIM_DATA set on purpose but mistyped must
    not end in that quietly."""
    monkeypatch.setenv("SML_SIM_DATA", str(tmp_path / "no-such-root"))
    r = cli("ingest", "yelp", "--scale", "0.002", "--db", f"sqlite:///{tmp_path}/s.db")
    one_line_error(r, contains="SML_SIM_DATA=")
    assert not (tmp_path / "s.db").exists()
    (tmp_path / "no-such-root").mkdir()  # a root without a yelp folder: the documented fallback
    r = cli("ingest", "yelp", "--scale", "0.002", "--db", f"sqlite:///{tmp_path}/s.db")
    assert r.exit_code == 0 and "no Yelp review file" in r.stdout, r.stdout + r.stderr


def test_the_period_length_hint_can_be_followed(cli, tmp_path):
    """The suggested --period-length must itself be accepted, on sparse and on short data alike."""
    import re

    # 30 rows over 97 days or 1.6 hours, asked for too many periods; 5 rows over 5 days, for too few
    for name, step, rows, asked in (("sparse", 97 * 86400 // 30, 30, "1s"), ("short", 190, 30, "1s"),
                                    ("few", 86400 + 3600, 5, "7d")):
        path = tmp_path / f"{name}.csv"
        path.write_text("user,item,time\n" + "".join(f"u{k % 4},i{k % 5},{1_700_000_000 + step * k}\n"
                                                     for k in range(rows)))
        db = f"sqlite:///{tmp_path}/{name}.db"
        r = cli("ingest", "csv", "--data", path, "--period-length", asked, "--min-user-interactions", "1",
                "--min-item-interactions", "1", "--db", db)
        hint = re.search(r"try --period-length (\S+)", r.stderr)
        assert r.exit_code == 2 and hint, r.stderr
        r = cli("ingest", "csv", "--data", path, "--period-length", hint.group(1), "--min-user-interactions", "1",
                "--min-item-interactions", "1", "--db", db)
        assert r.exit_code == 0, (hint.group(1), r.stderr)
