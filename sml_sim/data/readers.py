"""Streaming readers of raw interaction files. Each returns a :class:`RawStream`.

Readers hold only three int64 columns and the id dictionaries in memory, never the records
themselves, so a multi-GB Yelp review file is read in bounded memory. Malformed lines (bad JSON, a
missing field, an unparsable time, a truncated last line) are skipped and counted.

Times are checked at read time: one that decodes to a date outside 1900-01-01 .. 2200-01-01 UTC
(:data:`TIME_MIN` .. :data:`TIME_MAX`) is not a plausible interaction time but a wrong unit (unix
milliseconds read as seconds give the year 55000) or a garbled value, and the whole file is refused
with a :class:`DataError` that says which unit the values look like, rather than stored and left to
crash a later command.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sml_sim.data.base import DataError, RawStream

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
_PROGRESS_EVERY = 1 << 16

TIME_MIN = int(datetime(1900, 1, 1, tzinfo=UTC).timestamp())  # the plausible window, unix seconds
TIME_MAX = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp())  # (exclusive)
_SECONDS_PER_YEAR = 365.2425 * 86400


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

    def names(self) -> list[str]:
        """The raw ids in the order of their ints (dicts keep insertion order), bytes that are not
        UTF-8 written as \\x escapes (see :func:`_printable`)."""
        return [_printable(key) for key in self.ids]


def _printable(key: str) -> str:
    """A raw id as text. Files are read with ``surrogateescape``, so that ids differing only in bytes
    that are not UTF-8 (Latin-1 'caf\\xe9' and 'caf\\xfc') stay apart instead of both becoming 'caf?';
    those bytes are written as \\x escapes, which any store and terminal can hold."""
    try:
        key.encode("utf-8")
        return key
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# -c works whatever the file's suffix (gunzip -k refuses a name without .gz).
_PACKED = ((b"\x1f\x8b", "gzip-compressed: unpack it first, e.g. gzip -dc FILE > data.csv"),
           (b"PK\x03\x04", "a zip archive (or a spreadsheet workbook): extract the CSV from it, or save the "
                            "sheet as CSV, first"),
           (b"BZh", "bzip2-compressed: unpack it first, e.g. bzip2 -dc FILE > data.csv"),
           (b"\xfd7zXZ", "xz-compressed: unpack it first, e.g. xz -dc FILE > data.csv"))


def refuse_other_formats(path: Path, expected: str) -> None:
    """A compressed, UTF-16 or JSON file given where delimited text is expected: one clear line,
    rather than its first bytes quoted back as the 'columns' found."""
    with open(path, "rb") as f:
        head = f.read(4096)
    for magic, what in _PACKED:
        if head.startswith(magic):
            raise DataError(f"{path} is {what.replace('FILE', shlex.quote(str(path)))}")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise DataError(f"{path} holds UTF-16 text or binary data (NUL bytes), not {expected}: save it as UTF-8 text")
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        raise DataError(f"{path} looks like JSON lines, not {expected} (a Yelp review file is read by the yelp "
                        "dataset)")


def _require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"no {what} at {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected the {what} itself")
    return path


def _columns(users: array, items: array, times: array, skipped: int, notes: list[str],
             user_id: _Interner, item_id: _Interner) -> RawStream:
    user_names, item_names = user_id.names(), item_id.names()
    escaped = [shown for shown, key in zip(user_names + item_names, [*user_id.ids, *item_id.ids]) if shown != key]
    if escaped:
        notes = [*notes, f"{len(escaped)} user/item id(s) hold bytes that are not UTF-8 (first: '{escaped[0]}'): "
                         "each is kept as its own id, its bytes written as \\x escapes; save the file as "
                         "UTF-8 to see them as text"]
    return RawStream(
        np.frombuffer(users, dtype=np.int64).copy(),
        np.frombuffer(items, dtype=np.int64).copy(),
        np.frombuffer(times, dtype=np.int64).copy(),
        skipped,
        notes,
        user_names=user_names,
        item_names=item_names,
    )


def _plausible(ts: int) -> bool:
    """In the window, and not exactly 0: a time of 0 (1970-01-01 00:00:00) is how many exports write
    a missing one, and taken as real it stretches a 1990s stream back over decades of empty periods."""
    return TIME_MIN <= ts < TIME_MAX and ts != 0


class _OutOfWindow:
    """Counts the times outside [TIME_MIN, TIME_MAX) a reader met and keeps the first one."""

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[int, int, str] | None = None  # (seconds, line number, raw text)

    def add(self, ts: int, line: int, raw) -> None:
        self.count += 1
        if self.first is None:
            self.first = (ts, line, str(raw))

    def check(self, path: Path, what: str, read: int, *, unix_format: str | None = None,
              fix: str = "") -> str | None:
        """None when every time was in the window; a note when a few (under a tenth of the ``read``
        + bad ones) were not, and were skipped as malformed lines; else a one-line DataError.

        ``unix_format`` is the unit the values were read in (``"unix"`` or ``"unix-ms"``) when they
        are numbers: when every value is out of the window, the message says which unit they look
        like; ``fix`` is how to read them in that unit (by default, ``--time-format``).
        """
        if not self.count:
            return None
        ts, line, raw = self.first
        year = 1970 + ts / _SECONDS_PER_YEAR
        where = f"line {line}: {raw[:40]!r}, about the year {math.floor(year)}"
        if self.count * 10 < read + self.count:  # stray values in good data: skip them, say so
            return (f"skipped {self.count} line(s) whose time is 0 or outside the years 1900-2200 "
                    f"(first: {where})")
        msg = f"{path}: {self.count} of {read + self.count} {what} are 0 or outside the years 1900-2200 ({where})"
        compact = compact_date_format(raw) if unix_format is not None and not fix else None
        if compact is not None and read == 0:  # 19970920030510: a date written as digits, not a unit
            raise DataError(f"{msg}; the values look like dates written as {compact}: try --time-format {compact}")
        if unix_format is not None and read == 0:  # all of them: a wrong unit, not stray values
            seconds = ts * (1000 if unix_format == "unix-ms" else 1)
            for unit, factor, fmt in (("milliseconds", 1000, "unix-ms"), ("microseconds", 10 ** 6, None),
                                      ("nanoseconds", 10 ** 9, None)):
                if TIME_MIN <= seconds / factor < TIME_MAX and fmt != unix_format:
                    if fmt is not None:
                        how = fix or f"try --time-format {fmt}"
                        msg += f"; the values look like unix {unit}: {how}"
                    else:
                        msg += f"; the values look like unix {unit}: convert them to seconds or milliseconds"
                    break
        raise DataError(msg)


_COMPACT_DATES = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}


def compact_date_format(raw: str) -> str | None:
    """The strptime format of a date written as bare digits (19970920, 199709200305, 19970920030510)
    in the plausible years, else None."""
    raw = raw.strip()
    fmt = _COMPACT_DATES.get(len(raw)) if raw.isdigit() else None
    if fmt is None:
        return None
    try:
        year = datetime.strptime(raw, fmt).year
    except ValueError:
        return None
    return fmt if 1900 <= year < 2200 else None


def _all_compact_dates(values: np.ndarray) -> bool:
    """Every value reads as a YYYYMMDD date. Read as unix seconds such values fall within a few weeks
    of August 1970, and pass the plausible-years check unnoticed."""
    year, month, day = values // 10000, values // 100 % 100, values % 100
    return bool(values.size) and bool(((year >= 1900) & (year < 2200) & (month >= 1) & (month <= 12)
                                       & (day >= 1) & (day <= 31)).all())


def _time_note(notes: list[str], note: str | None) -> None:
    if note:
        notes.append(note)


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
    bad_times = _OutOfWindow()
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
            if not _plausible(ts):
                bad_times.add(ts, n, rec["date"])
                continue
            users.append(user_id(u))
            items.append(item_id(i))
            times.append(ts)
            if progress is not None and n % _PROGRESS_EVERY == 0:
                progress(f.tell(), total)
    if progress is not None:
        progress(total, total)
    time_note = bad_times.check(path, "review date(s)", len(times))
    notes = [f"skipped {skipped} malformed or truncated line(s)"] if skipped else []
    _time_note(notes, time_note)
    return _columns(users, items, times, skipped + bad_times.count, notes, user_id, item_id)


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
    time_notes: list[str] = []
    done = 0
    for path in files:
        bad_times, before = _OutOfWindow(), len(times)
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    u, ts = rec["userId"], int(rec["time"])
                except (ValueError, KeyError, TypeError, OverflowError):
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
                if not _plausible(ts):
                    bad_times.add(ts, n, rec["time"])
                    continue
                users.append(user_id(str(u)))
                items.append(item_id(str(article)))
                times.append(ts)
                if progress is not None and n % _PROGRESS_EVERY == 0:
                    progress(done + f.tell(), total)
        note = bad_times.check(path, "event time(s)", len(times) - before, unix_format="unix",
                               fix="Adressa times are unix seconds; convert the file")
        _time_note(time_notes, note and f"{path.name}: {note}")
        skipped += bad_times.count
        done += path.stat().st_size
    if progress is not None:
        progress(total, total)
    notes = [f"read {len(files)} day file(s)",
             f"dropped {not_article} event(s) without an article id and {no_reading} with zero or "
             "missing reading time"]
    if skipped:
        notes.append(f"skipped {skipped} malformed line(s)")
    notes += time_notes
    return _columns(users, items, times, skipped, notes, user_id, item_id)


def read_movielens(path: Path, progress: Progress | None = None) -> RawStream:
    """MovieLens ``u.data`` (tab), ``ratings.dat`` (``::``) or ``ratings.csv`` (with header)."""
    path = _require_file(path, "MovieLens ratings file")
    refuse_other_formats(path, "a MovieLens ratings file")
    total = path.stat().st_size
    users, items, times = array("q"), array("q"), array("q")
    user_id, item_id = _Interner(), _Interner()
    skipped = 0
    bad_times = _OutOfWindow()
    # utf-8-sig: a ratings.csv saved by Excel starts with a byte-order mark before "userId".
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        first = f.readline()
        if first.lower().startswith("userid"):
            sep, line0 = ",", 2
            if "timestamp" not in first.lower():
                raise DataError(f"{path}: header {first.strip()!r} has no timestamp column")
        else:
            sep, line0 = "\t" if "\t" in first else ("::" if "::" in first else ","), 1
            f.seek(0)
        for n, line in enumerate(f, line0):
            parts = line.strip().split(sep)
            if parts == [""]:
                continue
            try:
                ts = int(float(parts[3]))
                u, i = parts[0], parts[1]
                if not u or not i:
                    raise ValueError
            except (ValueError, IndexError, OverflowError):
                skipped += 1
                continue
            if not _plausible(ts):
                bad_times.add(ts, n, parts[3])
                continue
            users.append(user_id(u))
            items.append(item_id(i))
            times.append(ts)
            if progress is not None and n % _PROGRESS_EVERY == 0:
                progress(f.buffer.tell() if hasattr(f, "buffer") else 0, total)
    time_note = bad_times.check(path, "timestamp(s)", len(times), unix_format="unix",
                                fix="MovieLens times are unix seconds; read the file as the csv dataset with "
                                    "--time-format unix-ms")
    notes = [f"skipped {skipped} malformed line(s)"] if skipped else []
    _time_note(notes, time_note)
    return _columns(users, items, times, skipped + bad_times.count, notes, user_id, item_id)


UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def delimiter_char(text: str) -> str:
    """--delimiter as the character it means ('tab', 'TAB' and a typed backslash-t for a tab)."""
    return {"\\t": "\t", "tab": "\t"}.get(text.lower() if len(text) > 1 else text, text)


def parse_duration(text: str) -> int:
    """``"7d"`` -> 604800 seconds (units s, m, h, d, w)."""
    # Upper case too (7D), except M: minutes or months?
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwSHDW])\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise DataError(f"period length {text!r} is not a duration like 7d, 12h or 2w")
    exact = float(m.group(1)) * UNIT_SECONDS[m.group(2).lower()]
    if exact < 1:
        raise DataError(f"period length {text!r} is shorter than the one-second resolution of the times")
    seconds = round(exact)
    if abs(exact - seconds) > 1e-6:  # float noise aside (1.3h is 4680.000000000001)
        raise DataError(f"period length {text!r} is not a whole number of seconds, the resolution of the "
                        f"times: try {seconds}s")
    return seconds


def time_parser(time_format: str) -> Callable[[str], int]:
    """unix | unix-ms | iso | a strptime format (naive times are taken as UTC)."""
    if time_format == "unix":
        return lambda s: int(float(s))
    if time_format == "unix-ms":
        return lambda s: int(float(s)) // 1000
    if time_format == "iso":
        return _utc_seconds
    if "%" not in time_format:  # a misspelt name (unix-s) would be a pattern that matches no row
        raise DataError(f"--time-format {time_format!r} is not unix, unix-ms, iso or a strptime pattern "
                        "(one with % fields, e.g. '%Y-%m-%d %H:%M:%S')")

    def parse(s: str) -> int:
        dt = datetime.strptime(s, time_format)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp())

    return parse


_DELIMITER_NAMES = {"\t": "tab", ",": ",", ";": "';'", "|": "'|'"}


def _shown(text: str) -> str:
    """A header field as the error message shows it (a tab written as \\t, so the line stays one line)."""
    return _printable(text).replace("\t", "\\t").replace("\r", "\\r")


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _time_column_guess(fields: list[str],
                       parse_time: Callable[[str], int] | None) -> tuple[int, int] | None:
    """``(column, seconds)`` of the field of a data row that reads as an interaction time under the
    --time-format in use, or None. A time must be plausible and not within a year of 1970-01-01: ids
    and ratings (196, 3) read as unix seconds are plausible but fall minutes after the epoch. Of
    several such fields, the latest time wins (a long numeric id reads as an earlier year)."""
    if parse_time is None:
        return None
    best = None
    for k, field in enumerate(fields):
        try:
            ts = parse_time(field.strip())
        except (ValueError, OverflowError, OSError, TypeError):
            continue
        if _plausible(ts) and abs(ts) >= _SECONDS_PER_YEAR and (best is None or ts > best[1]):
            best = (k, ts)
    return best


def _split_guess(first: list[str], delimiter: str) -> tuple[list[str], str | None]:
    """A line read as one field, split at the first other known delimiter in it: (fields, that one)."""
    if len(first) == 1:
        for sep in _DELIMITER_NAMES:
            if sep != delimiter and sep in first[0]:
                return first[0].split(sep), sep
    return first, None


def _index_example(fields: list[str], parse_time: Callable[[str], int] | None,
                   sep: str | None, no_header: bool = False) -> str:
    """0-based column flags for a headerless file whose first row is ``fields``, the time column
    guessed from it when a field reads as a time (else the generic 0, 1, 2)."""
    guess = _time_column_guess(fields, parse_time) if len(fields) >= 3 else None
    # The example is whole: copied as it is, it reads the file (--no-header, a delimiter other than ",").
    flags = ("--no-header " if no_header else "") + (
        f"--delimiter {_DELIMITER_NAMES.get(sep, repr(sep))} " if sep and sep != "," else "")
    if guess is None:
        return f"e.g. {flags}--user-col 0 --item-col 1 --time-col 2"
    col, ts = guess
    user, item = [k for k in range(len(fields)) if k != col][:2]
    day = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
    return (f"e.g. {flags}--user-col {user} --item-col {item} --time-col {col} "
            f"(column {col} reads as the time {day})")


def _layout_hint(first: list[str], delimiter: str, header: bool,
                 parse_time: Callable[[str], int] | None = None) -> str:
    """A guess at why the columns were not found: a wrong --delimiter, or a file without a header.

    ``first`` is the first line as split with ``delimiter``. With ``parse_time`` (the --time-format
    in use), the column indices suggested for a headerless file take as the time the field of the
    first line that reads as a time (``--time-col 3`` for MovieLens ``u.data``, not the rating).
    """
    hints = []
    fields, sep = _split_guess(first, delimiter)
    if sep is not None:
        name = "tab" if sep == "\t" else repr(sep)
        hints.append(f"is it {name}-separated? try --delimiter {_DELIMITER_NAMES[sep]}")
    if header and fields and all(_looks_numeric(f.strip()) for f in fields):
        hints.append("the first line looks like data: no header line? try --no-header with 0-based column "
                     f"indices, {_index_example(fields, parse_time, sep or delimiter, no_header=True)}")
    return f" ({'; '.join(hints)})" if hints else ""


def _column_index(header: list[str] | None, spec: str, what: str, path: Path) -> int:
    if header is not None and spec in header:
        return header.index(spec)
    if spec.isdigit():
        return int(spec)
    if header is None:
        raise DataError(f"{path}: no {what} column {spec!r}: with --no-header, name the columns by 0-based "
                        f"index (--{what}-col 0, 1, ...)")
    names = ", ".join(_shown(n) for n in header)
    guess = _role_guess(header, what)
    hint = f"; --{what}-col {guess}?" if guess else ""
    raise DataError(f"{path}: no {what} column {spec!r} (columns: {names or 'none'}{hint})")


_ROLE_WORDS = {"user": ("user", "customer", "member", "visitor"),
               "item": ("item", "movie", "business", "product", "article", "track", "song", "book"),
               "time": ("time", "date", "ts", "when", "created")}


def _role_guess(header: list[str], what: str) -> str | None:
    """A header name that reads like the role's column (``timestamp`` for the time), if exactly one does."""
    if len(header) < 2:  # one name holding them all: a wrong --delimiter, hinted at separately
        return None
    hits = [n for n in header if any(w in n.lower() for w in _ROLE_WORDS[what])]
    return _shown(hits[0]) if len(hits) == 1 else None


SHORT_SPAN = 3600  # all times of at least SHORT_SPAN_ROWS rows within this many seconds: not a log
SHORT_SPAN_ROWS = 100
FEW_TIMES = 10  # at most this many distinct times over at least FEW_TIMES_ROWS rows: not a log
FEW_TIMES_ROWS = 1000


def span_text(seconds: int) -> str:
    """A duration in its largest whole unit, e.g. '94 day(s)'."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}(s)"
    return f"{seconds} second(s)"


def _narrow_times_note(times: np.ndarray, time_name: str, time_format: str) -> str | None:
    """A note when the times read do not look like an interaction log: all within a very short span,
    or very few distinct values for many rows (other than whole days), as when --time-col names a rating or a category
    column (MovieLens ``u.data`` read with --time-col 2: 100,000 times within 5 seconds of 1970)."""
    n = len(times)
    if n < SHORT_SPAN_ROWS:
        return None
    first, last = int(times.min()), int(times.max())
    short = last - first < SHORT_SPAN
    # Dates without a time of day (a daily log over a week has 7 values) are coarse, not wrong.
    few = (n >= FEW_TIMES_ROWS and np.unique(times[:10_000]).size <= FEW_TIMES  # cheap test first
           and bool((times % 86400).any()))
    if not short and not (few and np.unique(times).size <= FEW_TIMES):
        return None
    distinct = int(np.unique(times).size)
    shown = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") for t in (first, last)]
    return (f"the {n} times in column {time_name} span {span_text(last - first)} ({shown[0]} to {shown[1]} "
            f"UTC) with {distinct} distinct value(s), unlike an interaction log: check --time-col and "
            f"--time-format {time_format}")


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
    """Any delimited file; columns are named by header name or 0-based index.

    Read as ``utf-8-sig``, so the byte-order mark Excel writes ("CSV UTF-8") is not part of the first
    column's name. A time outside 1900-2200 refuses the file (see the module docstring); times that
    do not look like an interaction log (all within an hour, or a handful of distinct values) get a
    note naming the column, as when --time-col names a rating column.
    """
    path = _require_file(path, "CSV file")
    refuse_other_formats(path, "a delimited text file")
    parse_time = time_parser(time_format)
    users, items, times = array("q"), array("q"), array("q")
    user_id, item_id = _Interner(), _Interner()
    skipped = 0
    bad_times = _OutOfWindow()
    delimiter = delimiter_char(delimiter)
    total = path.stat().st_size
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=delimiter)
        names = next(reader, None) if header else None
        if header and names is None:
            raise DataError(f"{path} is empty")
        if header and not names:
            raise DataError(f"the first line of {path} is empty, where a header naming the columns is expected "
                            "(or give --no-header)")
        names = [n.strip() for n in names] if names else None
        if names is not None and len(names) > 1 and all(_looks_numeric(n) for n in names):
            # A header of numbers is the first data row: a column given as "3" would match the value 3.
            hint = _layout_hint(names, delimiter, header, parse_time).replace("the first line looks like data: ", "")
            raise DataError(f"{path}: the first line is not a header but data{hint}")
        specs = ((user_col, "user"), (item_col, "item"), (time_col, "time"))
        try:
            cols = [_column_index(names, c, w, path) for c, w in specs]
        except DataError as exc:
            if names is None:  # suggest indices from the first row, its time column guessed
                fields, sep = _split_guess(next(reader, None) or [], delimiter)
                example = _index_example(fields, parse_time, sep) if fields else ""
                raise DataError(f"{exc}: {example}" if "reads as the time" in example else str(exc)) from None
            raise DataError(f"{exc}{_layout_hint(names, delimiter, header, parse_time)}") from None
        for a in range(3):
            for b in range(a + 1, 3):
                if cols[a] == cols[b]:
                    raise DataError(
                        f"{path}: column {specs[b][0]!r} is both the {specs[a][1]} and the {specs[b][1]} column; "
                        f"give --{specs[a][1]}-col and --{specs[b][1]}-col different columns"
                    )
        width = max(cols) + 1
        if names is not None and width > len(names):
            raise DataError(f"{path}: column index {width - 1} is beyond the {len(names)} columns"
                            f"{_layout_hint(names, delimiter, header, parse_time)}")
        time_name = repr(names[cols[2]]) if names is not None else f"{cols[2]} (0-based)"
        first_row: list[str] | None = None
        first_skipped = None  # (file line, text) of the first row skipped (for the note)
        # Rows with more non-empty fields than the header names (a stray delimiter, a shifted row)
        # make every column suspect: 1,2,3,4,5 under user,item,time would read the time 3 (1970).
        # Where they are a few among many they are dropped below; where most rows are so, that is
        # the file's shape (a header naming fewer columns than there are) and they are read.
        extra: list[int] = []  # their positions among the rows read
        first_extra = None
        line0 = 2 if header else 1  # file line of the first data row (for messages)
        for n, row in enumerate(reader, line0):
            if not row:
                continue
            if first_row is None:
                first_row = row
            try:
                if len(row) < width:
                    raise ValueError
                raw = row[cols[2]].strip()
                ts = parse_time(raw)
                u, i = row[cols[0]].strip(), row[cols[1]].strip()
                if not u or not i:
                    raise ValueError
            except (ValueError, OverflowError, OSError):
                skipped += 1
                first_skipped = first_skipped or (n, delimiter.join(row))
                continue
            if not _plausible(ts):
                bad_times.add(ts, n, raw)
                continue
            if names is not None and len(row) > len(names) and any(f.strip() for f in row[len(names):]):
                extra.append(len(times))
                first_extra = first_extra or (n, delimiter.join(row))
            users.append(user_id(u))
            items.append(item_id(i))
            times.append(ts)
            if progress is not None and n % _PROGRESS_EVERY == 0:
                progress(min(total, n * 32), total)
    extra_note, dropped = None, 0
    if extra and len(extra) * 10 < len(times):  # a few shifted rows among good ones: not to be trusted
        keep = np.ones(len(times), dtype=bool)
        keep[extra] = False
        users, items, times = (np.frombuffer(a, dtype=np.int64)[keep] for a in (users, items, times))
        dropped = len(extra)
        extra_note = (f"skipped {len(extra)} row(s) with more fields than the header's {len(names)}, whose columns "
                      f"cannot be trusted (first: line {first_extra[0]}: '{_shown(first_extra[1][:60])}')")
    elif extra:
        extra_note = (f"{len(extra)} of {len(times)} rows have more fields than the header names ({len(names)}); "
                      "they were read by position")
    unix_format = time_format if time_format in ("unix", "unix-ms") else None
    time_note = bad_times.check(path, f"time(s) in column {time_name} (read as --time-format {time_format})",
                                len(times), unix_format=unix_format)
    if len(users) == 0 and skipped:
        if first_row is not None and len(first_row) < width:  # a column index past the rows' end
            raise DataError(f"{path}: column index {width - 1} is beyond the {len(first_row)} columns of its rows "
                            f"(0-based: 0 to {len(first_row) - 1}){_layout_hint(first_row, delimiter, False)}")
        hint = _layout_hint(first_row, delimiter, False) if first_row is not None else ""
        raise DataError(
            f"{path}: none of the {skipped} rows could be read (check --time-format {time_format!r} "
            f"and the column names){hint}"
        )
    if time_format == "unix" and _all_compact_dates(np.frombuffer(times, dtype=np.int64)):
        raise DataError(f"{path}: the {len(times)} times in column {time_name} look like dates written as "
                        f"YYYYMMDD (first: {times[0]}), not unix seconds: try --time-format %Y%m%d")
    notes = [f"skipped {skipped} row(s) with missing fields or unparsable times (first: line {first_skipped[0]}: "
             f"'{_shown(first_skipped[1][:60])}')"] if skipped else []
    _time_note(notes, extra_note)
    _time_note(notes, time_note)
    if time_format == "unix-ms" and times and max(times) < 62 * 86400:  # all before March 1970
        notes.append("every time falls in the first two months of 1970: if the values are unix seconds, "
                     "read them with --time-format unix")
    _time_note(notes, _narrow_times_note(np.frombuffer(times, dtype=np.int64), time_name, time_format))
    return _columns(users, items, times, skipped + dropped + bad_times.count, notes, user_id, item_id)


def data_root() -> Path:
    return Path(os.environ.get("SML_SIM_DATA", "data"))
