"""SQLAlchemy 2.x models of the replay store.

Interactions are keyed by their position ``seq`` in the time-ordered stream, and each period row
holds its ``[seq_start, seq_end)`` range, so reading a period is a primary-key range scan and no
secondary index slows the bulk insert. Per-case ranks are stored as one compact int32 blob per
(run, method, period) rather than one row per case: a paper-scale run has ~15M cases.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class DatasetRow(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(Text)
    is_synthetic: Mapped[bool] = mapped_column(Boolean)
    params: Mapped[dict] = mapped_column(JSON)
    split: Mapped[dict] = mapped_column(JSON)
    n_interactions: Mapped[int] = mapped_column(Integer)
    n_users: Mapped[int] = mapped_column(Integer)
    n_items: Mapped[int] = mapped_column(Integer)
    n_periods: Mapped[int] = mapped_column(Integer)
    skipped_lines: Mapped[int] = mapped_column(Integer, default=0)
    notes: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=datetime.utcnow)
    # Last ingested or run: which of several datasets of one name `periods NAME` shows. Deferred, so
    # that a store written before it existed can still be read (read-only stores cannot be upgraded).
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, deferred=True)


class PeriodRow(Base):
    __tablename__ = "periods"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    split: Mapped[str] = mapped_column(String(16))
    start_ts: Mapped[int] = mapped_column(Integer)
    end_ts: Mapped[int] = mapped_column(Integer)
    seq_start: Mapped[int] = mapped_column(Integer)
    seq_end: Mapped[int] = mapped_column(Integer)
    interactions: Mapped[int] = mapped_column(Integer)
    new_users: Mapped[int] = mapped_column(Integer)
    new_items: Mapped[int] = mapped_column(Integer)


class InteractionRow(Base):
    __tablename__ = "interactions"
    # Clustered on (dataset, seq): appends go to the end of one B-tree (no rowid table beside it).
    __table_args__ = {"sqlite_with_rowid": False}

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[int] = mapped_column(Integer)
    user: Mapped[int] = mapped_column(Integer)
    item: Mapped[int] = mapped_column(Integer)
    ts: Mapped[int] = mapped_column(Integer)


class RawIdsRow(Base):
    """The source's own ids of the users and items first seen in one period (their dense ids are
    the next ones in order), stored with the period: as zlib-compressed JSON lists of strings."""

    __tablename__ = "raw_ids"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    period: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_user: Mapped[int] = mapped_column(Integer)  # dense id of the first user in ``users``
    first_item: Mapped[int] = mapped_column(Integer)
    users: Mapped[bytes] = mapped_column(LargeBinary)
    items: Mapped[bytes] = mapped_column(LargeBinary)


class RunRow(Base):
    __tablename__ = "runs"
    # Ids are never handed out twice, even after `delete` (SQLite would reuse the largest otherwise).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    scenario: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict] = mapped_column(JSON)
    methods: Mapped[list] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")
    # "host:pid" of the process running it while status is "running": tells a killed run from a live one.
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=datetime.utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ResultRow(Base):
    __tablename__ = "results"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[int] = mapped_column(Integer, primary_key=True)
    split: Mapped[str] = mapped_column(String(16))
    # True where the method had seen this period before it was scored (SML's meta step in training
    # periods): such rows are shown, marked, and kept out of every validation or test figure.
    in_sample: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    n_cases: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict] = mapped_column(JSON)
    retrain_s: Mapped[float] = mapped_column(Float)
    eval_s: Mapped[float] = mapped_column(Float)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)


class CaseRanksRow(Base):
    __tablename__ = "case_ranks"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[int] = mapped_column(Integer, primary_key=True)
    sampled_rank: Mapped[bytes] = mapped_column(LargeBinary)  # int32, one per case
    full_rank: Mapped[bytes] = mapped_column(LargeBinary)
    n_candidates: Mapped[bytes] = mapped_column(LargeBinary)


class EvalCasesRow(Base):
    """The test cases of one period of a run, shared by all its methods."""

    __tablename__ = "eval_cases"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    period: Mapped[int] = mapped_column(Integer, primary_key=True)
    users: Mapped[bytes] = mapped_column(LargeBinary)  # int64
    items: Mapped[bytes] = mapped_column(LargeBinary)  # int64
    new_user: Mapped[bytes] = mapped_column(LargeBinary)  # bool
    new_item: Mapped[bytes] = mapped_column(LargeBinary)  # bool
