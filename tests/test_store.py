"""The replay store: idempotent period writes, SQLite pragmas, the stored period table."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from db.models import PeriodRow
from db.store import Store, fingerprint

OSLO = ZoneInfo("Europe/Oslo")


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path}/x.db")


@pytest.fixture
def dataset(make_dataset):
    return make_dataset(n=900, periods=6, split=(4, 1, 1), retrain_start=2, late_newcomers=40)


def _interactions(store, dataset_id):
    with store.engine.connect() as c:
        return c.execute(text("SELECT seq, period, user, item, ts FROM interactions WHERE dataset_id = :d "
                              "ORDER BY seq"), {"d": dataset_id}).all()


def test_writing_periods_twice_never_duplicates(store, dataset):
    fp = fingerprint({"name": "toy"})
    did = store.register_dataset(dataset, fp)
    assert store.register_dataset(dataset, fp) == did  # idempotent on the fingerprint
    n1 = store.write_periods(did, dataset, [0, 1, 2])
    assert n1 == int(dataset.offsets[3])
    n2 = store.write_periods(did, dataset, [1, 2, 3])  # overlapping: only period 3 is new
    assert n2 == int(dataset.offsets[4] - dataset.offsets[3])
    assert store.write_periods(did, dataset, range(6)) == int(dataset.offsets[6] - dataset.offsets[4])
    assert store.write_periods(did, dataset, range(6)) == 0
    assert store.interaction_count(did) == len(dataset.users)
    assert store.stored_periods(did) == set(range(6))
    rows = _interactions(store, did)
    assert [r.seq for r in rows] == list(range(len(dataset.users)))
    assert [r.user for r in rows] == dataset.users.tolist()
    assert [r.item for r in rows] == dataset.items.tolist()
    # the raw ids arrived with their periods, each once
    assert store.raw_ids(did) == (dataset.user_raw.tolist(), dataset.item_raw.tolist())
    assert [r.ts for r in rows] == dataset.times.tolist()
    assert [r.period for r in rows] == dataset.periods.tolist()
    with store.session() as s:
        assert s.query(PeriodRow).count() == 6


def test_interrupted_ingest_leaves_the_store_as_it_was(store, dataset, tmp_path, db_counts):
    """Registration and every period go in one transaction: Ctrl-C half-way stores nothing, and the
    store stays usable (an earlier two-step ingest met its own lock when it tried to clean up)."""
    done = store.ingest(dataset, "fp-first")
    before = db_counts(tmp_path / "x.db")

    def interrupt_at_3(t):
        if t == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.ingest(dataset, "fp-second", progress=interrupt_at_3)
    assert db_counts(tmp_path / "x.db") == before
    assert store.dataset_id("fp-second") is None
    assert store.ingest(dataset, "fp-second")[1] == len(dataset.users)  # not locked
    assert store.ingest(dataset, "fp-first") == (done[0], 0)  # idempotent


def test_period_rows_match_dataset_stats(store, dataset):
    did = store.register_dataset(dataset, "fp-stats")
    store.write_periods(did, dataset, range(dataset.n_periods))
    assert store.periods(did) == dataset.period_stats()
    stats = dataset.period_stats()
    assert sum(r["new_users"] for r in stats) == dataset.n_users
    assert sum(r["new_items"] for r in stats) == dataset.n_items
    assert [r["split"] for r in stats] == ["pretrain", "pretrain", "train", "train", "validation", "test"]


def test_sqlite_pragmas_are_on(store):
    with store.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar().lower() == "wal"
        assert c.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
    # every new connection gets them, not just the first one
    with store.engine.connect() as c1, store.engine.connect() as c2:
        assert c2.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert c1.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_foreign_keys_are_enforced(store):
    with pytest.raises(IntegrityError):
        with store.session() as s, s.begin():
            s.add(PeriodRow(dataset_id=12345, index=0, split="train", start_ts=0, end_ts=1, seq_start=0, seq_end=0,
                            interactions=0, new_users=0, new_items=0))


def test_ingesting_same_dataset_twice_keeps_counts(cli, tmp_path, toy_stream, db_counts):
    users, items, times = toy_stream(n=500)
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in zip(users, items, times)))
    db = tmp_path / "twice.db"
    args = ["ingest", "movielens", "--data", path, "--db", f"sqlite:///{db}", "--periods", "10", "--split",
            "6/2/2", "--retrain-start", "2", "--json"]
    assert cli(*args).exit_code == 0
    first = db_counts(db)
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    assert db_counts(db) == first
    assert first["interactions"] == 500 and first["periods"] == 10 and first["datasets"] == 1


def test_periods_json_keys(cli, tmp_path, toy_stream):
    users, items, times = toy_stream(n=400)
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in zip(users, items, times)))
    db = f"sqlite:///{tmp_path}/p.db"
    assert cli("ingest", "movielens", "--data", path, "--db", db, "--periods", "8", "--split", "5/1/2",
               "--retrain-start", "2").exit_code == 0
    r = cli("periods", "movielens", "--db", db, "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 8
    for k, row in enumerate(rows):
        assert set(row) >= {"index", "split", "start", "end", "interactions", "new_users", "new_items"}
        assert row["index"] == k
        assert row["interactions"] == 50
        assert row["start"] < row["end"]
    assert [r["split"] for r in rows] == ["pretrain"] * 2 + ["train"] * 3 + ["validation"] + ["test"] * 2
    assert sum(r["new_users"] for r in rows) == len(set(users.tolist()))
    # the table view works too
    r = cli("periods", "movielens", "--db", db)
    assert r.exit_code == 0 and "validation" in r.stdout
    # unknown dataset: one line, exit 2
    r = cli("periods", "yelp", "--db", db)
    assert r.exit_code == 2 and "no dataset 'yelp'" in r.stderr


def _oslo(y, mo, d, h, mi=0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=OSLO).timestamp())


def test_adressa_with_an_empty_period_is_stored(cli, tmp_path, db_counts):
    """A news site has quiet slots: a period with no interactions must be stored as an empty period."""
    folder = tmp_path / "adressa"
    folder.mkdir()
    for d in (1, 2):
        hours = (8, 12, 20) if d == 1 else (8, 12)  # no evening events on day 2
        with open(folder / f"2017010{d}", "w") as f:
            for h in hours:
                for k in range(4):
                    f.write(json.dumps({"userId": f"u{k}", "id": f"a{h}{k % 2}", "time": _oslo(2017, 1, d, h, k),
                                        "activeTime": 20}) + "\n")
    db = tmp_path / "a.db"
    r = cli("ingest", "adressa", "--data", folder, "--db", f"sqlite:///{db}", "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["periods"] == 6 and s["period_interactions"] == [4, 4, 4, 4, 4, 0]
    assert db_counts(db)["periods"] == 6 and db_counts(db)["interactions"] == 20


def test_write_empty_period_directly(store, make_dataset):
    from sml_sim.data.base import Dataset, Split

    ds0 = make_dataset(n=40, periods=4, split=(2, 1, 1), retrain_start=1)
    # the same stream with an empty period inserted at index 2
    periods = ds0.periods.copy()
    periods[periods >= 2] += 1
    ds = Dataset(name="gap", source="gap", is_synthetic=True, params={}, users=ds0.users, items=ds0.items,
                 times=ds0.times, periods=periods, n_users=ds0.n_users, n_items=ds0.n_items,
                 split=Split.from_counts(5, 3, 1, 1, 1))
    assert int(np.diff(ds.offsets)[2]) == 0
    did = store.register_dataset(ds, "gap")
    store.write_periods(did, ds, range(5))
    assert store.stored_periods(did) == set(range(5))
    assert store.interaction_count(did) == 40


def test_store_default_url_from_env(monkeypatch, tmp_path):
    from db.store import default_url

    monkeypatch.setenv("SML_SIM_DB", f"sqlite:///{tmp_path}/env.db")
    assert default_url() == f"sqlite:///{tmp_path}/env.db"
    s = Store()
    assert s.sqlite_path == tmp_path / "env.db"


def test_fingerprint_changes_with_the_data_file(tmp_path):
    f = tmp_path / "u.data"
    f.write_text("1\t1\t1\t1\n")
    a = fingerprint({"protocol": "movielens", "data": str(f)})
    f.write_text("1\t1\t1\t1\n2\t2\t2\t2\n")
    b = fingerprint({"protocol": "movielens", "data": str(f)})
    assert a != b


def test_reingest_from_default_location_sees_changed_file(cli, tmp_path, db_counts):
    """Without --data the protocol reads its default location; a changed file there must not be
    mistaken for the dataset already stored (the summary and the store must agree)."""
    root = tmp_path / "data"
    (root / "movielens").mkdir(parents=True)
    f = root / "movielens" / "u.data"
    f.write_text("".join(f"{k % 5}\t{k % 7}\t3\t{1000 + k}\n" for k in range(40)))
    db = tmp_path / "d.db"
    args = ["ingest", "movielens", "--db", f"sqlite:///{db}", "--periods", "4", "--split", "2/1/1",
            "--retrain-start", "1", "--json"]
    r = cli(*args, env={"SML_SIM_DATA": str(root)})
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["interactions"] == 40
    f.write_text("".join(f"{k % 9}\t{k % 11}\t3\t{5000 + k}\n" for k in range(100)))
    r = cli(*args, env={"SML_SIM_DATA": str(root)})
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["interactions"] == 100
    r = cli("periods", "movielens", "--db", f"sqlite:///{db}", "--json")
    assert sum(p["interactions"] for p in json.loads(r.stdout)) == 100


def test_real_file_appearing_at_default_location_is_not_stored_as_synthetic(cli, tmp_path):
    """yelp without --data falls back to synthetic-yelp; once the real file is placed at the default
    location, the store must record the real source, not keep the synthetic stream under the same key
    (otherwise `runs` labels real results as synthetic, or the reverse)."""
    try:
        from sml_sim.data import synthetic  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"sml_sim.data.synthetic is not importable yet: {exc}")
    root = tmp_path / "data"
    root.mkdir()
    db = f"sqlite:///{tmp_path}/fb.db"
    args = ["ingest", "yelp", "--db", db, "--scale", "0.002", "--min-user-interactions", "1",
            "--min-item-interactions", "1", "--periods", "5", "--split", "3/1/1", "--retrain-start", "1", "--json"]
    r = cli(*args, env={"SML_SIM_DATA": str(root)})
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["synthetic"] is True
    (root / "yelp").mkdir()
    (root / "yelp" / "yelp_academic_dataset_review.json").write_text("".join(
        json.dumps({"user_id": f"u{k % 4}", "business_id": f"b{k % 3}", "date": f"2019-03-{1 + k:02d} 10:00:00"})
        + "\n" for k in range(20)))
    r = cli(*args, env={"SML_SIM_DATA": str(root)})
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["synthetic"] is False and summary["interactions"] == 20
    stored = Store(db).latest_dataset("yelp")
    assert stored["source"] == summary["source"], (stored["source"], summary["source"])
    assert stored["interactions"] == 20


def test_run_of_a_vanished_process_reads_as_interrupted(store, dataset):
    import subprocess
    import sys

    from db.store import process_gone, this_process

    dataset_id = store.register_dataset(dataset, fingerprint(dataset.params, dataset.source))
    run_id = store.create_run(dataset_id, "s", {}, ["pop"], 0, "cpu")
    assert store.run(run_id).status == "running"  # this process owns it and is alive
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    host = this_process().rpartition(":")[0]
    with store.engine.begin() as c:
        c.execute(text("UPDATE runs SET owner = :o WHERE id = :r"), {"o": f"{host}:{gone}", "r": run_id})
    assert process_gone(f"{host}:{gone}")
    assert store.run(run_id).status == "interrupted"
    # Another machine's process cannot be checked from here: the stored status stands.
    assert not process_gone(f"another-host.example:{gone}")
    store.set_run_status(run_id, "running")  # resumed by this process
    assert store.run(run_id).status == "running"


def test_store_from_before_the_owner_column_is_upgraded(tmp_path, dataset):
    path = tmp_path / "old.db"
    old = Store(f"sqlite:///{path}")
    dataset_id = old.register_dataset(dataset, fingerprint(dataset.params, dataset.source))
    run_id = old.create_run(dataset_id, "s", {}, ["pop"], 0, "cpu")
    with old.engine.begin() as c:
        c.execute(text("ALTER TABLE runs DROP COLUMN owner"))
    old.engine.dispose()
    upgraded = Store(f"sqlite:///{path}")
    info = upgraded.run(run_id)  # no owner recorded: the status stands as stored
    assert info.status == "running"
    upgraded.set_run_status(run_id, "interrupted")
    assert upgraded.run(run_id).status == "interrupted"


def test_a_store_this_user_cannot_write_is_read_read_only(tmp_path, dataset, monkeypatch):
    """`runs`/`periods`/`export` on an archived results file: SQLite cannot read a WAL database in
    a folder where it cannot create the -shm file, so such a file is opened immutable."""
    import db.store as store_mod
    from db.store import StoreError

    url = f"sqlite:///{tmp_path}/archived.db"
    writer = Store(url)
    writer.ingest(dataset, "fp-archived")
    writer.engine.dispose()  # the writer is gone: its WAL is checkpointed into the file
    monkeypatch.setattr(store_mod.os, "access", lambda *a, **k: False)
    reader = Store(url, reading=True)
    assert reader.read_only and reader.sqlite_path == tmp_path / "archived.db"
    assert reader.latest_dataset(dataset.name)["id"] == reader.dataset_id("fp-archived")
    assert reader.runs() == []
    with pytest.raises(StoreError, match="no store at"):
        Store(f"sqlite:///{tmp_path}/typo.db", reading=True)
    assert not (tmp_path / "typo.db").exists()


def test_registering_a_dataset_another_process_is_ingesting_waits_and_reuses_it(tmp_path, dataset):
    """A run started while an ingest of the same data is writing: it used to fail with
    'UNIQUE constraint failed: datasets.fingerprint' once the ingest committed."""
    import threading
    import time

    url = f"sqlite:///{tmp_path}/c.db"
    ingesting, reader = Store(url), Store(url)
    ids = {}
    started = threading.Event()

    def ingest():
        with ingesting.engine.begin() as conn:
            ids["ingest"] = ingesting._register(conn, dataset, "fp-shared")
            started.set()
            time.sleep(0.5)  # still writing periods

    t = threading.Thread(target=ingest)
    t.start()
    started.wait()
    ids["run"] = reader.register_dataset(dataset, "fp-shared")  # waits for the lock, then finds it
    t.join()
    assert ids["run"] == ids["ingest"]


def test_read_only_open_of_awkward_paths_and_old_stores(tmp_path, dataset, monkeypatch):
    import db.store as store_mod
    from db.store import StoreError

    folder = tmp_path / "x#1 ?%"
    folder.mkdir()
    url = str(folder / "r.db")  # a bare path: taken whole, '?' included
    writer = Store(url)
    writer.ingest(dataset, "fp-odd")
    writer.engine.dispose()
    monkeypatch.setattr(store_mod.os, "access", lambda *a, **k: False)
    assert Store(url, reading=True).dataset_id("fp-odd") is not None
    assert sorted(p.name for p in folder.iterdir()) == ["r.db"] and not (tmp_path / "x").exists()

    monkeypatch.undo()
    old = tmp_path / "old.db"
    writer = Store(f"sqlite:///{old}")
    with writer.engine.begin() as conn:
        conn.execute(text("ALTER TABLE runs DROP COLUMN owner"))  # a store from before that column
    writer.engine.dispose()
    monkeypatch.setattr(store_mod.os, "access", lambda *a, **k: False)
    with pytest.raises(StoreError, match="older sml-sim"):
        Store(f"sqlite:///{old}", reading=True)


def test_a_run_another_live_process_is_driving_cannot_be_resumed(tmp_path, tiny_scenario, live_python_process):
    """Two drivers of one run (a `run` and a `replay` reopening it) used to both write; the TUI then
    marked it interrupted while the other kept going."""
    from db.replay import Replay
    from db.store import StoreError, this_process
    from sml_sim.config import load_scenario

    store = Store(f"sqlite:///{tmp_path}/live.db")
    run_id = Replay.new(store, load_scenario(tiny_scenario(methods=("pop",)))).run_id
    with store.engine.begin() as c:  # another (live, Python) process holds the run
        c.execute(text("UPDATE runs SET owner = :o WHERE id = :r"), {"o": live_python_process, "r": run_id})
    with pytest.raises(StoreError, match="another process"):
        Replay.resume(store, run_id)
    host = this_process().rpartition(":")[0]
    with store.engine.begin() as c:  # PID 1 is alive, but an init, not sml-sim: a number reused since
        c.execute(text("UPDATE runs SET owner = :o WHERE id = :r"), {"o": f"{host}:1", "r": run_id})
    init = Path("/proc/1/cmdline")
    if init.exists() and b"python" not in init.read_bytes().lower():  # (where PID 1 is no Python program)
        assert store.run(run_id).status == "interrupted"
    store.set_run_status(run_id, "running")  # this process owns it again
    assert Replay.resume(store, run_id).run_id == run_id


def test_a_tilde_in_the_db_path_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    Store("~/home.db")
    assert (tmp_path / "home.db").exists()


def test_a_missing_database_driver_says_what_to_install():
    import importlib.util

    from db.store import StoreError

    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed here")
    with pytest.raises(StoreError, match=r"Python driver \(psycopg\) is not installed; install it"):
        Store("postgresql+psycopg://user@localhost/none")


def test_raw_ids_are_stored_period_by_period(store, make_dataset):
    """The source's ids of the users and items first seen in a period are stored with it; a store
    missing the early periods' ids (written by an earlier version) says it has none."""
    users, items = np.array([5, 9, 5, 7, 9, 3, 3, 5]), np.array([40, 41, 42, 40, 43, 44, 45, 40])
    ds = make_dataset(users, items, np.arange(8), periods=4, split=(2, 1, 1), retrain_start=1)
    raw = (["5", "9", "7", "3"], ["40", "41", "42", "43", "44", "45"])
    assert (ds.user_raw.tolist(), ds.item_raw.tolist()) == raw
    did = store.register_dataset(ds, "raw")
    store.write_periods(did, ds, [0])
    assert store.raw_ids(did) == (["5", "9"], ["40", "41"])
    store.write_periods(did, ds, [1, 2, 3])
    assert store.raw_ids(did) == raw

    late = store.register_dataset(ds, "raw-late")
    kept = ds.user_raw, ds.item_raw
    ds.user_raw = ds.item_raw = None  # periods 0-1 stored without raw ids
    store.write_periods(late, ds, [0, 1])
    ds.user_raw, ds.item_raw = kept
    store.write_periods(late, ds, [2, 3])
    assert store.raw_ids(late) is None
    store.write_periods(late, ds, range(4))  # written again by this version: the missing ids are added
    assert store.raw_ids(late) == raw


def test_a_link_to_a_store_shares_its_checkpoints_and_never_reaches_anothers(tmp_path):
    """The folder was named after --db as typed: a link q/a.db -> p/b.db used p's checkpoints of a.db,
    and a new run through it cleared the run folders of the real p/a.db."""
    from db.replay import checkpoint_root

    (tmp_path / "p").mkdir()
    (tmp_path / "q").mkdir()
    real_a, real_b = Store(f"sqlite:///{tmp_path}/p/a.db"), Store(f"sqlite:///{tmp_path}/p/b.db")
    (tmp_path / "q" / "a.db").symlink_to(tmp_path / "p" / "b.db")
    linked = Store(f"sqlite:///{tmp_path}/q/a.db")
    assert checkpoint_root(linked) == checkpoint_root(real_b) == tmp_path / "p" / "sml-sim-checkpoints" / "b.db"
    assert checkpoint_root(linked) != checkpoint_root(real_a)


def test_two_processes_writing_the_same_periods_at_once_store_them_once(tmp_path, make_dataset):
    """Both read 'not stored yet' before either wrote: the second insert broke the unique key and
    failed its run (two `sml-sim run` of one dataset on one store)."""
    import threading

    dataset = make_dataset(n=20_000, periods=6, split=(4, 1, 1), retrain_start=2)
    url = f"sqlite:///{tmp_path}/race.db"
    first, second = Store(url), Store(url)
    did = first.register_dataset(dataset, fingerprint({"name": "race"}))
    start, errors = threading.Barrier(2), []

    def write(store):
        start.wait()
        try:
            for t in range(6):
                store.write_periods(did, dataset, [t])
        except Exception as exc:  # noqa: BLE001 - the failure under test
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(s,)) for s in (first, second)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    assert first.interaction_count(did) == len(dataset.users) and first.stored_periods(did) == set(range(6))


def test_only_one_of_two_simultaneous_resumes_takes_the_run(tmp_path, tiny_scenario):
    """Both read the run as interrupted, then both marked it running and continued it."""
    from tests.conftest import interrupted_run

    url = f"sqlite:///{tmp_path}/claim.db"
    run_id = interrupted_run(Store(url), tiny_scenario(methods=("pop",))).run_id
    one, other = Store(url), Store(url)
    seen = one.run(run_id).owner
    assert seen == other.run(run_id).owner
    assert one.claim_run(run_id, seen)
    other_process = "elsewhere:1"
    with other.engine.begin() as conn:  # the first claimant, as another process sees it
        conn.execute(text("UPDATE runs SET owner = :o WHERE id = :r"), {"o": other_process, "r": run_id})
    assert not other.claim_run(run_id, seen)
    assert other.run(run_id).owner == other_process


def test_a_new_reading_of_a_csv_file_is_not_taken_for_the_stored_old_one(tmp_path):
    """The reader changed how it reads some csv files: a store must not reuse a dataset stored by the old reading."""
    from sml_sim.data import DatasetSpec, load_dataset
    from sml_sim.data.protocols import READING_VERSION

    path = tmp_path / "t.csv"
    path.write_text("user,item,time\n" + "".join(f"u{k % 5},i{k % 7},{1_700_000_000 + 3600 * k}\n" for k in range(40)))
    ds = load_dataset(DatasetSpec(protocol="csv", data=str(path), periods=4))
    assert ds.params["reading"] == READING_VERSION["csv"] >= 2 and READING_VERSION["movielens"] >= 2


def test_rewriting_stored_periods_takes_no_write_lock(store, dataset, tmp_path):
    """Opening a stored run (a viewer) rewrites nothing, so it must not wait behind another writer."""
    import sqlite3
    import threading

    did = store.register_dataset(dataset, fingerprint({"name": "toy"}))
    store.write_periods(did, dataset, range(6))
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=1)
    holder.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        done = []
        viewer = threading.Thread(target=lambda: done.append(store.write_periods(did, dataset, range(6))), daemon=True)
        viewer.start()
        viewer.join(10)
        assert done == [0]
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_checkpoints_kept_under_a_links_name_by_an_earlier_version_are_pointed_to(tmp_path, tiny_scenario):
    import shutil

    from db.replay import Replay, checkpoint_root
    from db.store import StoreError
    from tests.conftest import interrupted_run

    (tmp_path / "p").mkdir()
    real = f"sqlite:///{tmp_path}/p/b.db"
    run_id = interrupted_run(Store(real), tiny_scenario(methods=("pop",))).run_id
    (tmp_path / "p" / "a.db").symlink_to(tmp_path / "p" / "b.db")
    linked = Store(f"sqlite:///{tmp_path}/p/a.db")
    new = checkpoint_root(linked) / f"run-{run_id}"
    old = tmp_path / "p" / "sml-sim-checkpoints" / "a.db" / f"run-{run_id}"
    shutil.move(new, old)  # where an earlier version, opened through the link, kept them
    with pytest.raises(StoreError, match=f"checkpoints are in {old}, named after the link"):
        Replay.resume(linked, run_id)
