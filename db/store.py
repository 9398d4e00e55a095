"""Engine factory and the small repository API that the engine's subscribers and the UI call.

Plain dataclasses and dicts go in and out; ORM objects never leave a session, so results can be
passed between threads safely (one session per call, hence per thread).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import sqlite3
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import numpy as np
from sqlalchemy import create_engine, delete, event, func, inspect, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from db.models import (
    Base,
    CaseRanksRow,
    DatasetRow,
    EvalCasesRow,
    InteractionRow,
    PeriodRow,
    RawIdsRow,
    ResultRow,
    RunRow,
)

DEFAULT_DB_FILE = "sml-sim.db"
# How long a write waits for another process's lock (an ingest of a multi-GB file into the same store
# holds it for a minute or two): long enough that a running replay outlasts it rather than fails, short
# enough that a command stuck behind a forgotten lock says so (Ctrl-C acts only once the wait ends).
BUSY_TIMEOUT_S = 120


class StoreError(Exception):
    """The store cannot be used (bad URL, unreachable, unknown run): a one-line user message."""


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(owner: str | None) -> bool:
    """True when ``owner`` ("host:pid") names a process of this host that no longer exists, or whose
    number now belongs to a program that is not Python (after a reboot, or in a container restarted
    under the same host name, PID 1 is an init). A run killed outright (SIGKILL, a closed terminal,
    the OOM killer) could not mark itself interrupted."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's process, or no owner recorded: cannot tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return not _may_run_sml_sim(int(pid))


def _may_run_sml_sim(pid: int) -> bool:
    """Whether the live process ``pid`` can be an sml-sim one: a Python program. Where its command line
    cannot be read (no /proc, another user's), it may be."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().lower()
    except OSError:
        return True
    return not command or b"python" in command or b"sml-sim" in command or b"sml_sim" in command


def process_alive_here(owner: str | None) -> bool:
    """True when ``owner`` ("host:pid") names a live process of this host other than this one."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or owner == this_process():
        return False
    return not process_gone(owner)


def refuse_if_held_here(info: RunInfo) -> None:
    """A run that a live process of this machine is running is left to it: no resume or delete."""
    if info.status == "running" and process_alive_here(info.owner):
        raise StoreError(f"run {info.run_id} is being run by another process (PID {info.owner.rpartition(':')[2]} "
                         "on this machine) right now; wait for it, or stop it first (its committed periods are kept)")


def default_url() -> str:
    return os.environ.get("SML_SIM_DB") or f"sqlite:///{DEFAULT_DB_FILE}"


def db_option(url: str) -> str:
    """The --db part of a command suggested for the store at ``url`` (none for the default store)."""
    return "" if url == default_url() else f" --db {shlex.quote(url)}"


def parse_url(url: str) -> URL:
    """--db as an SQLAlchemy URL: a bare path is an SQLite file, taken whole (a '?' or '#' in it is part
    of the name)."""
    try:
        return URL.create("sqlite", database=url) if "://" not in url else make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"--db {url!r} is not an SQLAlchemy URL (e.g. sqlite:///results.db)") from exc


def store_exists(url: str | None) -> bool:
    """Whether the store named by --db (or the default) is there already: an SQLite file that exists,
    or any server database (its existence is the server's business). A malformed URL counts as there,
    so that opening it says what is wrong."""
    try:
        parsed = parse_url(url or default_url())
    except StoreError:
        return True
    return (parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:")
            or Path(parsed.database).expanduser().exists())


def sqlite_file(url: str | None) -> Path | None:
    """The file of an SQLite store named by --db (or the default); None for a server or in-memory one."""
    try:
        parsed = parse_url(url or default_url())
    except StoreError:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    path = _database_file(parsed.database)
    return None if path is None else path.expanduser()


def _database_file(database: str | None) -> Path | None:
    """The file an SQLite URL's database part names: a path, or an SQLite URI (``file:x.db`` with
    ``?uri=true``); None for an in-memory one."""
    if database in (None, "", ":memory:"):
        return None
    if database.startswith("file:"):
        path = unquote(urlparse(database).path)
        return None if path in ("", ":memory:") else Path(path)
    return Path(database)


def make_engine(url: str | None = None, read_only: bool = False) -> Engine:
    """An engine for ``url``; ``read_only`` opens an SQLite file that this user cannot write (an
    archived or shared results file) as immutable, since SQLite cannot otherwise read a WAL database
    in a folder where it cannot create the -shm file."""
    url = url or default_url()
    parsed = parse_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    file = _database_file(parsed.database) if is_sqlite else None
    if file is not None:
        if not parsed.database.startswith("file:"):  # (an SQLite URI is passed on as it is)
            parsed = parsed.set(database=str(file.expanduser()))  # --db ~/results.db
        folder = file.expanduser().resolve().parent
        if not folder.is_dir():
            raise StoreError(f"the folder for the database {parsed.database} does not exist")
    kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}} if is_sqlite else {}
    if read_only and file is not None:
        parsed = parsed.set(database=_read_only_uri(file), query={"uri": "true"})
    try:
        engine = create_engine(parsed, **kwargs)
    except ModuleNotFoundError as exc:  # SQLAlchemy's driver for this kind of database is not installed
        hint = {"psycopg": "PostgreSQL: .venv/bin/pip install psycopg", "psycopg2": "PostgreSQL: .venv/bin/pip "
                "install psycopg and use a postgresql+psycopg:// URL"}.get(
            exc.name or "", "sml-sim supports SQLite and PostgreSQL")
        raise StoreError(f"cannot open the database {url}: its Python driver ({exc.name}) is not installed; "
                         f"install it into this environment ({hint})") from exc
    except Exception as exc:
        raise StoreError(f"cannot open the database {url}: {exc}") from exc
    if is_sqlite and not read_only:
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            # WAL lets the TUI read while a worker writes; the busy timeout rides out short locks.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    return engine


def fingerprint(spec: dict, source: str = "") -> str:
    """Identity of a prepared dataset: its spec and source, plus the size and mtime of the file or
    folder actually read (``resolved_data``, the default location included)."""
    key = {**spec, "source": source}
    data = key.get("resolved_data") or key.get("data")
    if data and Path(data).exists():
        p = Path(data).resolve()
        files = [p] if p.is_file() else sorted(x for x in p.iterdir() if x.is_file())
        key["data"] = str(p)
        key["files"] = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class RunInfo:
    run_id: int
    dataset: str
    source: str
    scenario: str
    methods: list[str]
    status: str
    last_period: int | None
    seed: int
    device: str
    config: dict
    dataset_id: int
    started_at: str
    error: str | None = None
    owner: str | None = None  # "host:pid" of the process running it, while it runs
    failed_methods: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id, "dataset": self.dataset, "source": self.source,
            "scenario": self.scenario, "methods": self.methods, "status": self.status,
            "failed_methods": self.failed_methods,
            "last_period": self.last_period, "seed": self.seed, "device": self.device,
            "started_at": self.started_at,
        }


_INSERT_INTERACTIONS = {
    True: "INSERT INTO interactions (dataset_id, seq, period, user, item, ts) VALUES (?, ?, ?, ?, ?, ?)",
    False: 'INSERT INTO interactions (dataset_id, seq, period, "user", item, ts) VALUES (%s, %s, %s, %s, %s, %s)',
}


def _read_only_uri(path: Path) -> str:
    """An SQLite URI that opens ``path`` without writing to it or beside it."""
    path = path.expanduser().resolve()
    wal = path.with_name(path.name + "-wal")
    # immutable ignores a -wal file: only when there is none (the writer closed) is it safe. Without
    # it, a WAL-mode file opened read-only gets -wal and -shm files made beside it.
    mode = "ro" if wal.exists() and wal.stat().st_size else "ro&immutable=1"
    return f"file:{quote(str(path))}?mode={mode}"


OTHER_DATABASE = "is another program's database"
OTHER_SHAPE = "has sml-sim's table names without their columns"


# Columns added to a table after its first version (see ``Store._add_missing_columns``).
LATER_COLUMNS = {"runs": {"owner"}, "datasets": {"used_at"}}


def _other_database(path: Path, what: str = OTHER_DATABASE) -> str:
    if what == OTHER_DATABASE:
        return (f"--db {path} is another program's database (it has tables that are not sml-sim's); give a new "
                "file or an sml-sim store")
    return (f"--db {path} is no store this version of sml-sim can use (its tables have sml-sim's names but not "
            "their columns: another program's database, or a store of another version); give a new file")


def _not_a_store(path: Path) -> str | None:
    """Why an existing SQLite file holds no sml-sim store ("is empty", "holds no tables",
    ``OTHER_DATABASE``), looked up without writing to it; None when it does hold one, or when that
    cannot be told here (the usual opening then says what is wrong)."""
    if path.is_dir():
        return None
    if path.stat().st_size == 0:
        return "is empty"
    try:
        con = sqlite3.connect(_read_only_uri(path), uri=True)
        try:
            names = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                     if not name.startswith("sqlite_")]
            columns = {name: {row[1] for row in con.execute(f'PRAGMA table_info("{name}")')} for name in names}
        finally:
            con.close()
    except sqlite3.Error:  # not a database at all, or locked: said when it is opened
        return None
    if not columns:
        return "holds no tables"
    # A store, perhaps half-made (opening it completes it), holds only sml-sim's tables, each with
    # the columns it has had from the start; anything else is another program's, whatever its names.
    ours = Base.metadata.tables
    if any(name not in ours for name in columns):
        return OTHER_DATABASE
    if any(not {c.name for c in ours[name].columns} - LATER_COLUMNS.get(name, set()) <= have
           for name, have in columns.items()):
        return OTHER_SHAPE
    return None


class Store:
    def __init__(self, url: str | None = None, create: bool = True, reading: bool = False):
        """Open the store at ``url``. ``create=False`` (commands that continue a run) refuses an
        SQLite file that does not exist yet instead of creating an empty one: a mistyped --db must
        not look like a store whose runs are gone. ``reading=True`` (commands that only read) implies
        it, and opens a file this user cannot write read-only instead of failing."""
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self._sqlite_path = path = self._file_of(self.engine)
        if (reading or not create) and path is not None and not path.expanduser().exists():
            raise StoreError(f"no store at {path}: nothing has been stored there yet (check --db or $SML_SIM_DB)")
        if path is not None and path.expanduser().exists():
            # Opening it the usual way would write into it: the schema, and WAL mode, which is kept in
            # the file. Never into another program's database; and a command that only reads or
            # continues writes into no file that is not a store yet.
            what = _not_a_store(path.expanduser())
            if what and (reading or not create):
                raise StoreError(f"no store at {path}: the file {what}, not an sml-sim store (check --db or "
                                 "$SML_SIM_DB)")
            if what in (OTHER_DATABASE, OTHER_SHAPE):
                raise StoreError(_other_database(path, what))
        self.read_only = reading and path is not None and not (
            os.access(path, os.W_OK) and os.access(path.expanduser().resolve().parent, os.W_OK))
        if self.read_only:
            self.engine.dispose()
            self.engine = make_engine(self.url, read_only=True)
        try:
            if not self.read_only:
                self._create_tables()
                self._add_missing_columns()
            elif "owner" not in {c["name"] for c in inspect(self.engine).get_columns("runs")}:
                raise StoreError(f"{path} was written by an older sml-sim and cannot be upgraded without "
                                 "write access; open it once where it can be written")
        except DatabaseError as exc:  # unreachable server, or a file that is not a database
            raise StoreError(f"cannot open the database {self.url}: {exc.orig}") from exc
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _create_tables(self) -> None:
        """The tables a new store needs. Two processes opening a new store at once may both find a
        table missing; the one that loses the race finds it there on a second look."""
        try:
            Base.metadata.create_all(self.engine)
        except DatabaseError as exc:
            if "already exists" not in str(exc.orig):
                raise
            Base.metadata.create_all(self.engine)

    @staticmethod
    def check_location(url: str | None) -> None:
        """Refuse, before any long work, a store that cannot be opened: a malformed URL, a missing
        driver, or an SQLite file whose folder does not exist (``make_engine`` checks), or an in-memory
        one, which would lose everything when the command ends. Creates nothing."""
        url = url or default_url()
        if parse_url(url).get_backend_name() == "sqlite" and sqlite_file(url) is None:
            raise StoreError(f"--db {url} is an in-memory database: everything stored would be lost when the "
                             "command ends; give a file, e.g. sqlite:///results.db")
        make_engine(url).dispose()
        path = sqlite_file(url)
        what = _not_a_store(path.expanduser()) if path is not None and path.expanduser().exists() else None
        if what in (OTHER_DATABASE, OTHER_SHAPE):
            raise StoreError(_other_database(path, what))

    def _add_missing_columns(self) -> None:
        """Stores made by an earlier version lack columns added since (create_all adds tables only)."""
        added = {"runs": ("owner", "VARCHAR(128)"), "datasets": ("used_at", "TIMESTAMP")}
        for table, (column, kind) in added.items():
            if column not in {c["name"] for c in inspect(self.engine).get_columns(table)}:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                except DatabaseError:  # another process opening the same store added it first
                    if column not in {c["name"] for c in inspect(self.engine).get_columns(table)}:
                        raise

    def _has(self, table: str, column: str | None = None) -> bool:
        """Whether this store has the table (and column): a read-only store of an earlier version may not."""
        names = inspect(self.engine).get_table_names()
        return table in names and (column is None or column in {c["name"] for c in
                                                               inspect(self.engine).get_columns(table)})

    @property
    def sqlite_path(self) -> Path | None:
        return self._sqlite_path

    @staticmethod
    def _file_of(engine: Engine) -> Path | None:
        url = make_url(engine.url)
        return _database_file(url.database) if url.get_backend_name() == "sqlite" else None

    def session(self) -> Session:
        return self.sessions()

    # ------------------------------------------------------------ datasets

    def dataset_id(self, fp: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(DatasetRow.id).where(DatasetRow.fingerprint == fp))

    def register_dataset(self, dataset, fp: str) -> int:
        """Insert the dataset row if new (idempotent on the fingerprint); returns its id."""
        with self.engine.begin() as conn:
            return self._register(conn, dataset, fp)

    @staticmethod
    def _register(conn, dataset, fp: str) -> int:
        values = dict(
            name=dataset.name, fingerprint=fp, source=dataset.source, is_synthetic=dataset.is_synthetic,
            params=dataset.params, split=dataset.split.as_dict(), n_interactions=int(len(dataset.users)),
            n_users=dataset.n_users, n_items=dataset.n_items, n_periods=dataset.n_periods,
            skipped_lines=dataset.skipped_lines, notes=list(dataset.notes),
        )
        if conn.dialect.name == "sqlite":
            # Insert first, then look up: the insert waits for the write lock, so a concurrent ingest of
            # the same dataset is seen once it commits (a look-up first raced to a UNIQUE failure).
            conn.execute(sqlite_insert(DatasetRow).values(**values).on_conflict_do_nothing(
                index_elements=["fingerprint"]))
            dataset_id = conn.execute(select(DatasetRow.id).where(DatasetRow.fingerprint == fp)).scalar_one()
        else:
            dataset_id = conn.execute(select(DatasetRow.id).where(DatasetRow.fingerprint == fp)).scalar()
            if dataset_id is None:
                dataset_id = conn.execute(DatasetRow.__table__.insert().values(**values)).inserted_primary_key[0]
        Store._mark_used(conn, dataset_id)
        return dataset_id

    def mark_used(self, dataset_id: int) -> None:
        """Record that a run used the dataset now (`periods NAME` shows the one used last)."""
        if not self.read_only:
            with self.engine.begin() as conn:
                self._mark_used(conn, dataset_id)

    @staticmethod
    def _mark_used(conn, dataset_id: int) -> None:
        conn.execute(DatasetRow.__table__.update().where(DatasetRow.id == dataset_id)
                     .values(used_at=datetime.utcnow()))

    def ingest(self, dataset, fp: str, progress: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Register ``dataset`` and store every period in one transaction, so that an ingest that
        fails or is interrupted leaves the store as it was (no cleanup step that could meet the
        interrupted connection's lock). Returns (dataset id, interactions written)."""
        with self.engine.begin() as conn:
            dataset_id = self._register(conn, dataset, fp)
            written = self._write_periods(conn, dataset_id, dataset, range(dataset.n_periods), None, progress)
        return dataset_id, written

    def stored_periods(self, dataset_id: int) -> set[int]:
        with self.session() as s:
            return set(s.scalars(select(PeriodRow.index).where(PeriodRow.dataset_id == dataset_id)))

    def write_periods(self, dataset_id: int, dataset, periods: Iterable[int], stats: list[dict] | None = None,
                      progress: Callable[[int], None] | None = None) -> int:
        """Store the given periods in one transaction; periods already stored are left alone.

        Returns the number of interactions written. Writing a period twice never duplicates rows:
        a stored period is skipped, and a half-written one cannot exist (one transaction).
        """
        with self.engine.begin() as conn:
            return self._write_periods(conn, dataset_id, dataset, periods, stats, progress)

    @staticmethod
    def _write_periods(conn, dataset_id: int, dataset, periods: Iterable[int], stats: list[dict] | None,
                       progress: Callable[[int], None] | None) -> int:
        stats = stats or dataset.period_stats()
        written = 0
        periods = list(periods)

        def stored() -> tuple[set, set]:
            done = set(conn.execute(select(PeriodRow.index).where(PeriodRow.dataset_id == dataset_id)).scalars())
            named = set(conn.execute(select(RawIdsRow.period).where(RawIdsRow.dataset_id == dataset_id))
                        .scalars()) if done else set()
            return done, named

        done, named = stored()
        if all(t in done and t in named for t in periods):  # nothing to write: no lock taken (a viewer)
            for t in periods:
                if progress:
                    progress(t)
            return 0
        # Take the write lock before reading again what is stored (a no-op update of the dataset's
        # row): two processes writing the same periods at once would both find them missing, and the
        # second insert would break the unique key. The second now waits, then finds them stored.
        conn.execute(update(DatasetRow).where(DatasetRow.id == dataset_id).values(n_periods=DatasetRow.n_periods))
        done, named = stored()
        for t in periods:
            if t in done:
                if t not in named:  # stored by a version that kept no raw ids: add them now
                    Store._write_raw_ids(conn, dataset_id, dataset, t)
                if progress:
                    progress(t)
                continue
            lo, hi = int(dataset.offsets[t]), int(dataset.offsets[t + 1])
            if hi > lo:  # an empty period (a quiet Adressa evening) still gets its period row
                rows = list(zip([dataset_id] * (hi - lo), range(lo, hi), [t] * (hi - lo),
                                dataset.users[lo:hi].tolist(), dataset.items[lo:hi].tolist(),
                                dataset.times[lo:hi].tolist()))
                conn.exec_driver_sql(_INSERT_INTERACTIONS[conn.dialect.paramstyle == "qmark"], rows)
            Store._write_raw_ids(conn, dataset_id, dataset, t)
            st = stats[t]
            conn.execute(PeriodRow.__table__.insert().values(
                dataset_id=dataset_id, index=t, split=st["split"], start_ts=st["start"], end_ts=st["end"],
                seq_start=lo, seq_end=hi, interactions=hi - lo, new_users=st["new_users"],
                new_items=st["new_items"],
            ))
            written += hi - lo
            if progress:
                progress(t)
        return written

    @staticmethod
    def _write_raw_ids(conn, dataset_id: int, dataset, t: int) -> None:
        if dataset.user_raw is None or dataset.item_raw is None:
            return
        ends = dataset.first_seen_ends
        lo = [int(e[t - 1]) if t > 0 else 0 for e in ends]
        hi = [int(e[t]) for e in ends]
        if hi == lo:
            return
        pack = [zlib.compress(json.dumps(names[a:b].tolist()).encode())
                for names, a, b in zip((dataset.user_raw, dataset.item_raw), lo, hi)]
        values = dict(dataset_id=dataset_id, period=t, first_user=lo[0], first_item=lo[1], users=pack[0],
                      items=pack[1])
        # Two processes backfilling one older store may both write a period's ids: the first one stays.
        insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}.get(conn.dialect.name)
        if insert is None:
            conn.execute(RawIdsRow.__table__.insert().values(**values))
        else:
            conn.execute(insert(RawIdsRow).values(**values).on_conflict_do_nothing())

    def raw_ids(self, dataset_id: int) -> tuple[list[str], list[str]] | None:
        """The source's id of every stored user and item (index: dense id), or None where the
        dataset was stored by an earlier version, which did not keep them."""
        users: list[str] = []
        items: list[str] = []
        if not self._has("raw_ids"):  # a read-only store of an earlier version
            return None
        with self.session() as s:
            rows = s.scalars(select(RawIdsRow).where(RawIdsRow.dataset_id == dataset_id).order_by(RawIdsRow.period))
            for r in rows:
                if r.first_user != len(users) or r.first_item != len(items):
                    return None  # a gap: periods stored before raw ids were kept
                users += json.loads(zlib.decompress(r.users))
                items += json.loads(zlib.decompress(r.items))
        return (users, items) if users else None

    def latest_dataset(self, name: str, like: dict | None = None) -> dict | None:
        """The dataset of that name ingested or run last (several can share a name: other periods,
        filters or files), with ``same_name``, how many there are. ``like`` (a DatasetSpec's as_dict,
        a scenario's) keeps only those read and cut with its settings."""
        order = [DatasetRow.id.desc()]
        if self._has("datasets", "used_at"):
            order.insert(0, func.coalesce(DatasetRow.used_at, DatasetRow.created_at).desc())
        with self.session() as s:
            rows = s.scalars(select(DatasetRow).where(DatasetRow.name == name).order_by(*order)).all()
            if like is not None:  # (data paths are stored absolute, and scenarios give them so)
                rows = [r for r in rows if all((r.params or {}).get(k) == v for k, v in like.items())]
            return {**_dataset_dict(rows[0]), "same_name": len(rows)} if rows else None

    def dataset(self, dataset_id: int) -> dict:
        with self.session() as s:
            return _dataset_dict(s.get(DatasetRow, dataset_id))

    def data_unchanged(self, dataset_id: int) -> bool:
        """Whether the file or folder a stored dataset was read from is as it was (names, sizes,
        mtimes: its fingerprint); a synthetic stream has none and never changes."""
        with self.session() as s:
            row = s.get(DatasetRow, dataset_id)
            return row is not None and fingerprint(row.params, row.source) == row.fingerprint

    def periods(self, dataset_id: int) -> list[dict]:
        with self.session() as s:
            rows = s.scalars(select(PeriodRow).where(PeriodRow.dataset_id == dataset_id).order_by(PeriodRow.index))
            return [
                {"index": r.index, "split": r.split, "start": r.start_ts, "end": r.end_ts,
                 "interactions": r.interactions, "new_users": r.new_users, "new_items": r.new_items}
                for r in rows
            ]

    def holds_same_data(self, dataset_id: int, dataset) -> bool:
        """Whether the stored dataset is ``dataset``, compared by content (sizes, every stored
        interaction in chunks, the stored raw ids): a file copied again or touched changes its
        fingerprint but not its data."""
        with self.session() as s:
            row = s.get(DatasetRow, dataset_id)
            if row is None or (row.n_interactions, row.n_users, row.n_items, row.n_periods) != (
                    len(dataset.users), dataset.n_users, dataset.n_items, dataset.n_periods):
                return False
        columns = (dataset.users, dataset.items, dataset.times)
        done = 0
        with self.engine.connect() as conn:
            result = conn.execute(text('SELECT "user", item, ts FROM interactions WHERE dataset_id = :d ORDER BY seq'),
                                  {"d": dataset_id})
            for chunk in result.partitions(200_000):
                stored = np.array([tuple(r) for r in chunk], dtype=np.int64)
                hi = done + len(stored)
                if hi > len(dataset.users) or not all(np.array_equal(stored[:, k], c[done:hi])
                                                      for k, c in enumerate(columns)):
                    return False
                done = hi
        raw = self.raw_ids(dataset_id)
        if raw is not None and dataset.user_raw is not None:
            users, items = raw
            if (users != dataset.user_raw[:len(users)].tolist()
                    or items != dataset.item_raw[:len(items)].tolist()):
                return False  # the same shape under other names
        return True

    def refingerprint(self, dataset_id: int, fp: str) -> bool:
        """Give a stored dataset the fingerprint of its source as it is now (after ``holds_same_data``);
        False when another stored dataset already has it."""
        if self.dataset_id(fp) is not None:
            return False
        with self.engine.begin() as conn:
            conn.execute(DatasetRow.__table__.update().where(DatasetRow.id == dataset_id).values(fingerprint=fp))
        return True

    def interaction_count(self, dataset_id: int) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(InteractionRow)
                            .where(InteractionRow.dataset_id == dataset_id)) or 0

    # ------------------------------------------------------------ runs

    def create_run(self, dataset_id: int, scenario: str, config: dict, methods: list[str], seed: int,
                   device: str) -> int:
        with self.session() as s, s.begin():
            run = RunRow(dataset_id=dataset_id, scenario=scenario, config=config, methods=methods, seed=seed,
                         device=device, status="running", owner=this_process())
            s.add(run)
            s.flush()
            self._mark_used(s.connection(), dataset_id)
            return run.id

    def record_threads(self, run_id: int, threads: int, from_period: int | None) -> None:
        """A continued run switched to another CPU thread count: keep the new one and when it began."""
        with self.session() as s, s.begin():
            run = s.get(RunRow, run_id)
            config = dict(run.config)
            config["threads_before"] = [*config.get("threads_before", []),
                                        {"threads": config.get("threads"), "until_period": from_period}]
            config["threads"] = threads
            run.config = config

    def claim_run(self, run_id: int, seen_owner: str | None) -> bool:
        """Mark the run running in this process, in one statement, unless another process has taken
        it up since its owner was read as ``seen_owner`` (two resumes started at the same moment)."""
        with self.engine.begin() as conn:
            owner_unchanged = RunRow.owner.is_(None) if seen_owner is None else RunRow.owner == seen_owner
            claimed = conn.execute(
                update(RunRow).where(RunRow.id == run_id,
                                     or_(RunRow.status != "running", owner_unchanged, RunRow.owner == this_process()))
                .values(status="running", owner=this_process(), error=None, finished_at=None))
            return claimed.rowcount == 1

    def set_run_status(self, run_id: int, status: str, error: str | None = None) -> None:
        with self.session() as s, s.begin():
            run = s.get(RunRow, run_id)
            run.status = status
            run.owner = this_process() if status == "running" else None
            run.error = error
            run.finished_at = datetime.utcnow() if status in ("finished", "failed") else None

    def run(self, run_id: int) -> RunInfo:
        runs = self.runs(run_id=run_id)
        if not runs:
            raise StoreError(f"no run {run_id} in {self.url}")
        return runs[0]

    def runs(self, run_id: int | None = None) -> list[RunInfo]:
        if run_id is not None and not 0 <= run_id < 2**63:  # no such id (SQLite's integers are 64-bit)
            return []
        with self.session() as s:
            q = select(RunRow, DatasetRow).join(DatasetRow, RunRow.dataset_id == DatasetRow.id).order_by(RunRow.id)
            if run_id is not None:
                q = q.where(RunRow.id == run_id)
            failed: dict[int, list[str]] = {}
            fq = select(ResultRow.run_id, ResultRow.method).where(ResultRow.status == "failed").distinct()
            if run_id is not None:
                fq = fq.where(ResultRow.run_id == run_id)
            for rid, method in s.execute(fq).all():
                failed.setdefault(rid, []).append(method)
            out = []
            for run, ds in s.execute(q).all():
                out.append(RunInfo(
                    failed_methods=sorted(failed.get(run.id, [])),
                    run_id=run.id, dataset=ds.name, source=ds.source, scenario=run.scenario,
                    methods=list(run.methods), last_period=self._last_period(s, run),
                    status="interrupted" if run.status == "running" and process_gone(run.owner) else run.status,
                    owner=run.owner,
                    seed=run.seed, device=run.device, config=run.config, dataset_id=ds.id,
                    started_at=run.started_at.isoformat(timespec="seconds"), error=run.error,
                ))
            return out

    @staticmethod
    def _last_period(s: Session, run: RunRow) -> int | None:
        """The last period committed for every method of the run that has not failed."""
        rows = s.execute(select(ResultRow.method, ResultRow.period, ResultRow.status)
                         .where(ResultRow.run_id == run.id)).all()
        last: dict[str, int] = {}
        failed = set()
        for method, period, status in rows:
            last[method] = max(last.get(method, -1), period)
            if status == "failed":
                failed.add(method)
        live = [m for m in run.methods if m not in failed]
        if not last or any(m not in last for m in live):
            return None
        return min((last[m] for m in live), default=max(last.values()))

    def committed(self, run_id: int) -> dict[str, int]:
        """Last committed period per method."""
        with self.session() as s:
            return dict(s.execute(
                select(ResultRow.method, func.max(ResultRow.period)).where(ResultRow.run_id == run_id)
                .group_by(ResultRow.method)).all())

    def commit_result(self, run_id: int, result, cases=None) -> None:
        """One (method, period) result with its per-case ranks, in one transaction."""
        with self.session() as s, s.begin():
            if cases is not None and s.get(EvalCasesRow, (run_id, cases.period)) is None:
                s.add(EvalCasesRow(
                    run_id=run_id, period=cases.period, users=cases.users.astype(np.int64).tobytes(),
                    items=cases.items.astype(np.int64).tobytes(), new_user=cases.new_user.astype(bool).tobytes(),
                    new_item=cases.new_item.astype(bool).tobytes(),
                ))
            s.merge(ResultRow(
                run_id=run_id, method=result.method, period=result.period, split=result.split,
                in_sample=result.in_sample, status=result.status, error=result.error, n_cases=result.n_cases,
                metrics=result.metrics, retrain_s=result.retrain_s, eval_s=result.eval_s, extra=result.extra,
            ))
            if result.sampled_rank is not None:
                s.merge(CaseRanksRow(
                    run_id=run_id, method=result.method, period=result.period,
                    sampled_rank=result.sampled_rank.astype(np.int32).tobytes(),
                    full_rank=result.full_rank.astype(np.int32).tobytes(),
                    n_candidates=result.n_candidates.astype(np.int32).tobytes(),
                ))

    def results(self, run_id: int) -> list[dict]:
        with self.session() as s:
            rows = s.scalars(select(ResultRow).where(ResultRow.run_id == run_id)
                             .order_by(ResultRow.period, ResultRow.method))
            return [
                {"method": r.method, "period": r.period, "split": r.split, "in_sample": r.in_sample,
                 "status": r.status, "error": r.error, "n_cases": r.n_cases, "metrics": dict(r.metrics),
                 "retrain_s": r.retrain_s, "eval_s": r.eval_s, "extra": dict(r.extra or {})}
                for r in rows
            ]

    def case_ranks(self, run_id: int) -> Iterable[dict]:
        """Per-case ranks joined with the cases, one dict of arrays per (method, period)."""
        with self.session() as s:
            cases = {c.period: c for c in s.scalars(select(EvalCasesRow).where(EvalCasesRow.run_id == run_id))}
            for r in s.scalars(select(CaseRanksRow).where(CaseRanksRow.run_id == run_id)
                               .order_by(CaseRanksRow.method, CaseRanksRow.period)):
                c = cases[r.period]
                yield {
                    "method": r.method, "period": r.period,
                    "users": np.frombuffer(c.users, dtype=np.int64),
                    "items": np.frombuffer(c.items, dtype=np.int64),
                    "new_user": np.frombuffer(c.new_user, dtype=bool),
                    "new_item": np.frombuffer(c.new_item, dtype=bool),
                    "sampled_rank": np.frombuffer(r.sampled_rank, dtype=np.int32),
                    "full_rank": np.frombuffer(r.full_rank, dtype=np.int32),
                    "n_candidates": np.frombuffer(r.n_candidates, dtype=np.int32),
                }

    def delete_run(self, run_id: int, force: bool = False) -> None:
        """Remove a run and everything stored for it (results, ranks, cases); its dataset stays. A run
        that a live process may be running (on this host, or another) is refused unless ``force``."""
        info = self.run(run_id)
        refuse_if_held_here(info)  # whatever --force says: it is for a machine this one cannot see
        if info.status == "running" and info.owner not in (None, this_process()) and not force:
            raise StoreError(f"run {run_id} is being run by {info.owner} right now; stop it first, or add --force "
                             "if that process is gone (on another machine this one cannot tell)")
        with self.session() as s, s.begin():
            for model in (ResultRow, CaseRanksRow, EvalCasesRow):
                s.execute(delete(model).where(model.run_id == run_id))
            s.execute(delete(RunRow).where(RunRow.id == run_id))

    def delete_results_after(self, run_id: int, method: str, period: int) -> None:
        with self.session() as s, s.begin():
            for model in (ResultRow, CaseRanksRow):
                s.execute(delete(model).where(model.run_id == run_id, model.method == method,
                                              model.period > period))


def _dataset_dict(row: DatasetRow) -> dict:
    return {
        "id": row.id, "dataset": row.name, "source": row.source, "synthetic": row.is_synthetic,
        "params": row.params, "split": row.split, "interactions": row.n_interactions, "users": row.n_users,
        "items": row.n_items, "periods": row.n_periods, "skipped_lines": row.skipped_lines,
        "notes": list(row.notes or []),
    }
