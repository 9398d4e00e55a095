"""Streaming readers of raw interaction files. Each returns a :class:`RawStream`.

Readers hold only three int64 columns and the id dictionaries in memory, never the records
themselves, so a multi-GB Yelp review file is read in bounded memory. Malformed lines (bad JSON, a
missing field, an unparsable time, a truncated last line) are skipped and counted.
"""

from __future__ import annotations

import csv
import json
import os
import re
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sml_sim.data.base import DataError, RawStream

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
_PROGRESS_EVERY = 1 << 16


class _Interner:
    """Raw string id -> dense int, in order of first sight."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, key) -> int:
        ids = self.ids
        value = ids.get(key)
        if value is None:
            value = ids[key] = len(ids)
        return value


def _require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"no {what} at {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected the {what} itself")
    return path


def _columns(users: array, items: array, times: array, skipped: int, notes: list[str]) -> RawStream:
    return RawStream(
        np.frombuffer(users, dtype=np.int64).copy(),
        np.frombuffer(items, dtype=np.int64).copy(),
        np.frombuffer(times, dtype=np.int64).copy(),
        skipped,
        notes,
    )


def _utc_seconds(text: str) -> int:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def read_yelp(path: Path, progress: Progress | None = None) -> RawStream:
    """Yelp Open Dataset review file: JSON lines with ``user_id``, ``business_id``, ``date``."""
    path = _require_file(path, "Yelp review file")
    total = path.stat().st_size
    users, items, times = array("q"), array("q"), array("q")
    user_id, item_id = _Interner(), _Interner()
    skipped = 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                ts = _utc_seconds(rec["date"])
                u, i = rec["user_id"], rec["business_id"]
                if not isinstance(u, str) or not isinstance(i, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                skipped += 1
                continue
            users.append(user_id(u))
            items.append(item_id(i))
            times.append(ts)
            if progress is not None and n % _PROGRESS_EVERY == 0:
                progress(f.tell(), total)
    if progress is not None:
        progress(total, total)
    notes = [f"skipped {skipped} malformed or truncated line(s)"] if skipped else []
    return _columns(users, items, times, skipped, notes)


def adressa_day_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise DataError(f"no Adressa folder at {folder}")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file; expected the folder of Adressa day files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"the folder {folder} holds no Adressa day files")
    return files


def read_adressa(folder: Path, progress: Progress | None = None) -> RawStream:
    """Adressa day files (JSON lines of page events: ``userId``, ``id``, ``time``, ``activeTime``).

    Events without an article ``id`` are not article reads and are dropped; so are events whose
    reading time is zero or missing (a missing ``activeTime`` counts as zero, as in the paper's cut).
    """
    files = adressa_day_files(folder)
    total = sum(p.stat().st_size for p in files)
    users, items, times = array("q"), array("q"), array("q")
    user_id, item_id = _Interner(), _Interner()
    skipped = not_article = no_reading = 0
    done = 0
    for path in files:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    u, ts = rec["userId"], int(rec["time"])
                except (ValueError, KeyError, TypeError):
                    skipped += 1
                    continue
                article = rec.get("id")
                if not article:
                    not_article += 1
                    continue
                try:
                    active = float(rec.get("activeTime") or 0)
                except (TypeError, ValueError):
                    active = 0.0
                if active <= 0:
                    no_reading += 1
                    continue
                users.append(user_id(str(u)))
                items.append(item_id(str(article)))
                times.append(ts)
                if progress is not None and n % _PROGRESS_EVERY == 0:
                    progress(done + f.tell(), total)
        done += path.stat().st_size
    if progress is not None:
        progress(total, total)
    notes = [f"read {len(files)} day file(s)",
             f"dropped {not_article} event(s) without an article id and {no_reading} with zero or "
             "missing reading time"]
    if skipped:
        notes.append(f"skipped {skipped} malformed line(s)")
    return _columns(users, items, times, skipped, notes)


def read_movielens(path: Path, progress: Progress | None = None) -> RawStream:
    """MovieLens ``u.data`` (tab), ``ratings.dat`` (``::``) or ``ratings.csv`` (with header)."""
    path = _require_file(path, "MovieLens ratings file")
    total = path.stat().st_size
    users, items, times = array("q"), array("q"), array("q")
    user_id, item_id = _Interner(), _Interner()
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
        if first.lower().startswith("userid"):
            sep = ","
            if "timestamp" not in first.lower():
                raise DataError(f"{path}: header {first.strip()!r} has no timestamp column")
        else:
            sep = "\t" if "\t" in first else ("::" if "::" in first else ",")
            f.seek(0)
        for n, line in enumerate(f, 1):
            parts = line.strip().split(sep)
            if parts == [""]:
                continue
            try:
                ts = int(float(parts[3]))
                u, i = parts[0], parts[1]
                if not u or not i:
                    raise ValueError
            except (ValueError, IndexError):
                skipped += 1
                continue
            users.append(user_id(u))
            items.append(item_id(i))
            times.append(ts)
            if progress is not None and n % _PROGRESS_EVERY == 0:
                progress(f.buffer.tell() if hasattr(f, "buffer") else 0, total)
    notes = [f"skipped {skipped} malformed line(s)"] if skipped else []
    return _columns(users, items, times, skipped, notes)


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """``"7d"`` -> 604800 seconds (units s, m, h, d, w)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise DataError(f"period length {text!r} is not a duration like 7d, 12h or 2w")
    return int(float(m.group(1)) * _UNIT_SECONDS[m.group(2)])


def time_parser(time_format: str) -> Callable[[str], int]:
    """unix | unix-ms | iso | a strptime format (naive times are taken as UTC)."""
    if time_format == "unix":
        return lambda s: int(float(s))
    if time_format == "unix-ms":
        return lambda s: int(float(s)) // 1000
    if time_format == "iso":
        return _utc_seconds

    def parse(s: str) -> int:
        dt = datetime.strptime(s, time_format)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp())

    return parse


def _column_index(header: list[str] | None, spec: str, what: str, path: Path) -> int:
    if header is not None and spec in header:
        return header.index(spec)
    if spec.isdigit():
        return int(spec)
    names = ", ".join(header or [])
    raise DataError(f"{path}: no {what} column {spec!r} (columns: {names or 'none'})")


def read_csv(
    path: Path,
    *,
    user_col: str,
    item_col: str,
    time_col: str,
    time_format: str = "unix",
    delimiter: str = ",",
    header: bool = True,
    progress: Progress | None = None,
) -> RawStream:
    """Any delimited file; columns are named by header name or 0-based index."""
    path = _require_file(path, "CSV file")
    parse_time = time_parser(time_format)
    users, items, times = array("q"), array("q"), array("q")
    user_id, item_id = _Interner(), _Interner()
    skipped = 0
    delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    total = path.stat().st_size
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter)
        names = next(reader, None) if header else None
        if header and names is None:
            raise DataError(f"{path} is empty")
        names = [n.strip() for n in names] if names else None
        cols = [_column_index(names, c, w, path) for c, w in
                ((user_col, "user"), (item_col, "item"), (time_col, "time"))]
        width = max(cols) + 1
        if names is not None and width > len(names):
            raise DataError(f"{path}: column index {width - 1} is beyond the {len(names)} columns")
        for n, row in enumerate(reader, 1):
            if not row:
                continue
            try:
                if len(row) < width:
                    raise ValueError
                ts = parse_time(row[cols[2]].strip())
                u, i = row[cols[0]].strip(), row[cols[1]].strip()
                if not u or not i:
                    raise ValueError
            except (ValueError, OverflowError, OSError):
                skipped += 1
                continue
            users.append(user_id(u))
            items.append(item_id(i))
            times.append(ts)
            if progress is not None and n % _PROGRESS_EVERY == 0:
                progress(min(total, n * 32), total)
    if len(users) == 0 and skipped:
        raise DataError(
            f"{path}: none of the {skipped} rows could be read (check --time-format {time_format!r} "
            "and the column names)"
        )
    notes = [f"skipped {skipped} row(s) with missing fields or unparsable times"] if skipped else []
    return _columns(users, items, times, skipped, notes)


def data_root() -> Path:
    return Path(os.environ.get("SML_SIM_DATA", "data"))
