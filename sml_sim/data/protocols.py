"""Dataset protocols: how each source is read, filtered and cut into periods (paper 4.1.1).

=================  ==========================  ========  ======  ==========  ==============
protocol           source                      filters   cut     split       retrain start
=================  ==========================  ========  ======  ==========  ==============
yelp               Yelp review JSON lines      10 / 20   40 eq.  30/3/7      10
adressa            folder of day files         none      3/day   48/5/10 *   20 *
movielens          u.data / .dat / .csv        none      40 eq.  30/3/7      10
csv                any delimited file          none      N eq.   30/3/7 *    10 *
                                                         or T
synthetic-yelp     built-in generator          10 / 20   40 eq.  30/3/7      10
synthetic-adressa  built-in generator          none      3/day   48/5/10     20
=================  ==========================  ========  ======  ==========  ==============

``*`` scaled in proportion when the number of periods differs (e.g. an Adressa folder of 7 days).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from sml_sim.data import readers
from sml_sim.data.base import (
    MIN_PERIODS,
    DataError,
    Dataset,
    RawStream,
    Split,
    build_dataset,
    equal_count_periods,
    parse_split,
)

OSLO = ZoneInfo("Europe/Oslo")
MAX_SCALE = 100.0  # synthetic streams: 100 x the paper's size is ~300M interactions, already beyond one machine
ADRESSA_SLOTS = (0, 10, 17)  # local hours where the morning, afternoon and evening periods begin


@dataclass
class DatasetSpec:
    """Everything that determines a prepared dataset; stored with each run so it can be rebuilt."""

    protocol: str
    data: str | None = None
    scale: float | None = None
    seed: int = 0
    periods: int | None = None
    period_length: str | None = None
    min_user_interactions: int | None = None
    min_item_interactions: int | None = None
    split: str | None = None  # "30/3/7"
    retrain_start: int | None = None
    csv: dict = field(default_factory=dict)  # user_col, item_col, time_col, time_format, delimiter

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DatasetSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    default_location: str
    min_user: int
    min_item: int
    reference_split: tuple[int, int, int]
    reference_start: int


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in [
        Protocol("yelp", "Yelp Open Dataset reviews; users <10 and items <20 dropped; 40 equal-count periods",
                 "data/yelp/yelp_academic_dataset_review.json", 10, 20, (30, 3, 7), 10),
        Protocol("adressa", "Adressa news day files; zero reading time dropped; 3 periods per Oslo day",
                 "data/adressa/ (one file per day)", 1, 1, (48, 5, 10), 20),
        Protocol("movielens", "MovieLens u.data, ratings.dat or ratings.csv; every rating is an interaction; "
                 "40 periods",
                 "data/movielens/ (u.data, ratings.dat or ratings.csv)", 1, 1, (30, 3, 7), 10),
        Protocol("csv", "any delimited file: --user-col/--item-col/--time-col; --periods N or --period-length",
                 "--data PATH (required)", 1, 1, (30, 3, 7), 10),
        Protocol("synthetic-yelp", "built-in Yelp-like stream: slow taste drift, long-lived items",
                 "built in (--scale, --seed)", 10, 20, (30, 3, 7), 10),
        Protocol("synthetic-adressa", "built-in Adressa-like stream: news items read for hours after publication",
                 "built in (--scale, --seed)", 1, 1, (48, 5, 10), 20),
    ]
}


MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")  # ML-100K, ML-1M/10M, ML-20M and later


# What each real-data reader takes, for the error when it read nothing at all.
EXPECTED_FORMAT = {
    "movielens": "u.data (user, item, rating, unix time; tab-separated), ratings.dat (the same split by '::') "
                 "or ratings.csv (userId,movieId,rating,timestamp with a header)",
    "yelp": "Yelp's review JSON lines, each with user_id, business_id and date",
    "adressa": "Adressa's day files of JSON lines, each with userId, id (the article), time and a positive "
               "activeTime (events without reading time are not reads)",
}


def default_location(protocol: str) -> Path:
    root = readers.data_root()
    return {
        "yelp": root / "yelp" / "yelp_academic_dataset_review.json",
        "adressa": root / "adressa",
        "movielens": _movielens_file(root / "movielens") if (root / "movielens").is_dir()
        else root / "movielens" / MOVIELENS_FILES[0],
    }.get(protocol, root)


def _movielens_file(path: Path) -> Path:
    """A MovieLens ratings file as given, or the first of ``MOVIELENS_FILES`` in a folder (u.data when
    none is there, for the error message)."""
    if path.is_dir():
        return next((path / f for f in MOVIELENS_FILES if (path / f).is_file()), path / MOVIELENS_FILES[0])
    return path


def reads_a_file(spec) -> bool:
    """Whether a spec's data comes from a file or folder (a seed changes nothing about it), rather than
    from a synthetic stream (which yelp and adressa fall back to when their default file is absent)."""
    if spec.protocol.startswith("synthetic-"):
        return False
    if spec.protocol in ("yelp", "adressa") and spec.data is None:
        return default_location(spec.protocol).exists()
    return True


def input_paths(spec) -> list[Path]:
    """The files and folders a spec's data is read from (none for a synthetic stream): what an output
    must never overwrite."""
    if spec.protocol.startswith("synthetic-"):
        return []
    return [data_path(spec)] + ([Path(spec.data)] if spec.data else [])


def data_path(spec) -> Path:
    """The file or folder a real dataset is read from: --data, or the protocol's default location; a
    MovieLens folder means the ratings file in it."""
    path = Path(spec.data) if spec.data else default_location(spec.protocol)
    return _movielens_file(path) if spec.protocol == "movielens" else path


# ---------------------------------------------------------------- period cuts


ADRESSA_SPILL_HOURS = 2  # Oslo is 1-2 hours ahead of UTC
# Raised when the same file starts being read into different periods or interactions, so that the
# store's fingerprint (which covers the dataset's params) tells the new reading from a stored old one.
READING_VERSION = {
    "adressa": 2,  # 2: the UTC-midnight spill joins the evening before
    "csv": 2,  # 2: ids with bytes that are not UTF-8 kept apart; rows with extra fields skipped
    "movielens": 2,  # 2: ids with bytes that are not UTF-8 kept apart
}


def adressa_cut(times: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]], list[str]]:
    """Three periods per Europe/Oslo day: [0:00,10:00), [10:00,17:00), [17:00,24:00).

    Offsets are looked up once per distinct UTC hour, so daylight-saving days are cut correctly.
    A last local day whose events all fall in its first two hours is the spill of day files cut at
    UTC midnight: those events join the evening before (noted) instead of opening a day of one
    short and two empty periods, which would also rescale the split.
    """
    hours = times // 3600
    uniq, inv = np.unique(hours, return_inverse=True)
    offsets = np.array(
        [int(datetime.fromtimestamp(int(h) * 3600, OSLO).utcoffset().total_seconds()) for h in uniq],
        dtype=np.int64,
    )
    local = times + offsets[inv]
    local_day = local // 86400
    hour = (local % 86400) // 3600
    slot = (hour >= ADRESSA_SLOTS[1]).astype(np.int64) + (hour >= ADRESSA_SLOTS[2])
    first_day = int(local_day.min())
    n_days = int(local_day.max()) - first_day + 1
    notes = []
    last = local_day == first_day + n_days - 1
    spill = n_days > 1 and bool((hour[last] < ADRESSA_SPILL_HOURS).all())
    if spill:
        local_day = np.where(last, local_day - 1, local_day)
        slot = np.where(last, 2, slot)
        n_days -= 1
        notes.append(f"{int(last.sum())} event(s) in the first {ADRESSA_SPILL_HOURS} hours of the last Oslo day "
                     "(day files cut at UTC midnight) joined the evening period before")
    periods = ((local_day - first_day) * 3 + slot).astype(np.int32)
    start = date(1970, 1, 1) + timedelta(days=first_day)
    bounds = []
    for d in range(n_days):
        day = start + timedelta(days=d)
        edges = [datetime(day.year, day.month, day.day, h, tzinfo=OSLO) for h in ADRESSA_SLOTS]
        nxt = day + timedelta(days=1)
        edges.append(datetime(nxt.year, nxt.month, nxt.day, ADRESSA_SPILL_HOURS if spill and d == n_days - 1 else 0,
                              tzinfo=OSLO))
        bounds += [(int(edges[k].timestamp()), int(edges[k + 1].timestamp())) for k in range(3)]
    return periods, bounds, notes


def equal_count_cut(n_periods: int, too_few=None):
    """``n_periods`` equal-count periods. ``too_few(n)``, when given, is the error message for a stream
    of only ``n < n_periods`` interactions (so it can name the file and the flag to change)."""

    def cut(times: np.ndarray):
        if too_few is not None and len(times) < n_periods:
            raise DataError(too_few(len(times)))
        return equal_count_periods(len(times), n_periods), None

    return cut


def fixed_window_cut(length_s: int, label: str = ""):
    """Periods of ``length_s`` seconds from the first interaction. More windows than interactions is
    refused before any is built (a 1s window over years of data would fill the memory)."""

    def cut(times: np.ndarray):
        span = int(times[-1]) - int(times[0])
        n = span // length_s + 1
        if MIN_PERIODS <= n <= len(times):
            periods = ((times - times[0]) // length_s).astype(np.int32)
            t0 = int(times[0])
            return periods, [(t0 + k * length_s, t0 + (k + 1) * length_s) for k in range(n)]
        length = _length_for(span, len(times)) if span else None
        hint = ("every interaction has the same time: check --time-col, or cut with --periods N" if not span
                else f"try --period-length {length} or --periods N" if length else "cut with --periods N")
        cuts = f"--period-length {label or f'{length_s}s'} cuts {readers.span_text(span)} of data into {n:,}"
        if n < MIN_PERIODS:
            raise DataError(f"{cuts} period(s); at least {MIN_PERIODS} are needed (train, validation, test): {hint}")
        raise DataError(f"{cuts} periods, more than its {len(times):,} interactions; {hint}")

    return cut


def _length_for(span: int, rows: int) -> str | None:
    """A whole-unit period length that cuts ``span`` seconds into a usable number of periods: at least
    MIN_PERIODS and at most one per interaction, near 40 (the paper's count) where the data allows;
    None when no whole-unit length does."""
    def periods(length: int) -> int:
        return span // length + 1

    target = min(40, rows)
    for aim in (target, MIN_PERIODS):  # near 40 first, else just enough
        need = span / max(1, aim - 1)
        for unit in ("d", "h", "m", "s"):  # the units --period-length reads
            seconds = readers.UNIT_SECONDS[unit]
            for k in (math.ceil(need / seconds), math.floor(need / seconds)):
                if k >= 1 and MIN_PERIODS <= periods(k * seconds) <= rows:
                    return f"{k}{unit}"
    return None


# ---------------------------------------------------------------- loading


def _source_and_raw(spec: DatasetSpec, protocol: Protocol, progress) -> tuple[str, bool, RawStream, str]:
    """Returns (source label, is_synthetic, raw stream, cut kind)."""
    name = spec.protocol
    if name in ("yelp", "adressa") and spec.data is None and not default_location(name).exists():
        root = os.environ.get("SML_SIM_DATA")
        if root and not Path(root).expanduser().is_dir():  # set on purpose: a typo must not mean synthetic data
            raise DataError(f"SML_SIM_DATA={root}: no such folder; fix or unset it, or pass --data PATH")
        # Nothing at the documented location: say so and replay the synthetic stream instead.
        where = default_location(name)
        where = where.parent if name == "yelp" else where
        fallback = DatasetSpec(**{**spec.as_dict(), "protocol": f"synthetic-{name}"})
        label, _, raw, cut = _source_and_raw(fallback, PROTOCOLS[fallback.protocol], progress)
        what = "Yelp review file" if name == "yelp" else "Adressa day files"
        return f"{label} (no {what} at {where}/)", True, raw, cut
    if name.startswith("synthetic-"):
        from sml_sim.data import synthetic  # numpy-heavy generator code, loaded only when used
    if name == "synthetic-yelp":
        scale = spec.scale if spec.scale is not None else synthetic.YELP_DEFAULT_SCALE
        return (f"synthetic-yelp (scale {scale:g}, seed {spec.seed})", True,
                synthetic.generate_yelp_like(scale, spec.seed), "count")
    if name == "synthetic-adressa":
        scale = spec.scale if spec.scale is not None else synthetic.ADRESSA_DEFAULT_SCALE
        return (f"synthetic-adressa (scale {scale:g}, seed {spec.seed})", True,
                synthetic.generate_adressa_like(scale, spec.seed), "oslo")
    path = data_path(spec)
    if name == "yelp":
        return f"yelp ({path})", False, readers.read_yelp(path, progress), "count"
    if name == "adressa":
        return f"adressa ({path})", False, readers.read_adressa(path, progress), "oslo"
    if name == "movielens":
        return f"movielens ({path})", False, readers.read_movielens(path, progress), "count"
    if name == "csv":
        if spec.data is None:
            raise DataError("the csv protocol needs --data PATH")
        opts = {"user_col": "user", "item_col": "item", "time_col": "time", **spec.csv}
        return f"csv ({path})", False, readers.read_csv(path, progress=progress, **opts), "count"
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(PROTOCOLS)}")


def check_spec(spec: DatasetSpec) -> None:
    """The checks that need no reading: a bad spec fails at once, before a UI opens or a long
    file is streamed in."""
    if spec.protocol not in PROTOCOLS:
        raise DataError(f"unknown dataset {spec.protocol!r}; known: {', '.join(PROTOCOLS)}")
    if spec.scale is not None and not (math.isfinite(spec.scale) and spec.scale > 0):
        raise DataError(f"--scale must be a positive number, not {spec.scale}")
    if spec.scale is not None and spec.scale > MAX_SCALE:
        raise DataError(f"--scale {spec.scale:g}: at most {MAX_SCALE:g} (1.0 is the paper's size, millions of "
                        "interactions)")
    for flag, value in (("--min-user-interactions", spec.min_user_interactions),
                        ("--min-item-interactions", spec.min_item_interactions)):
        if value is not None and value < 0:
            raise DataError(f"{flag} must be 0 or more, not {value}")
    if spec.period_length and spec.periods:
        raise DataError("give either --periods or --period-length, not both")
    if spec.periods is not None and spec.periods < MIN_PERIODS:
        raise DataError(f"--periods {spec.periods}: at least {MIN_PERIODS} periods are needed (train, validation, test)")
    if spec.period_length:
        readers.parse_duration(spec.period_length)
    if spec.split:
        parse_split(spec.split)
    if spec.retrain_start is not None and spec.retrain_start < 1:
        raise DataError(f"--retrain-start {spec.retrain_start}: the first retraining period is 1 or later")
    if not 0 <= spec.seed < 2**63:
        raise DataError(f"--seed must be 0 or more and below 2^63, not {spec.seed}")
    if spec.protocol != "csv" and spec.csv:  # never dropped silently
        raise DataError(f"the csv column options apply to the csv dataset, not {spec.protocol}")
    if spec.csv.get("time_format") is not None:
        readers.time_parser(spec.csv["time_format"])
    delimiter = spec.csv.get("delimiter")
    if delimiter is not None and len(readers.delimiter_char(delimiter)) != 1:
        raise DataError(f"--delimiter {delimiter!r}: give one character ('tab' for tabs)"
                        + ("; MovieLens's ratings.dat (fields split by '::') is read by the movielens dataset"
                           if delimiter == "::" else ""))
    _check_source(spec)
    _check_split(spec)


def _check_split(spec: DatasetSpec) -> None:
    """With the period count known before reading (not cut by length or by Oslo days), the split is
    checked before the data is read, so that its error comes with the scenario file that set it."""
    by_days = spec.protocol in ("adressa", "synthetic-adressa") and spec.periods is None
    if not (spec.split or spec.retrain_start is not None) or spec.period_length or by_days:
        return
    protocol = PROTOCOLS[spec.protocol]
    n_periods = spec.periods if spec.periods is not None else sum(protocol.reference_split)
    try:
        split_of(spec, protocol, n_periods)
    except DataError as exc:
        default = f" ({spec.protocol}'s default period count; --periods N sets another)" if spec.periods is None else ""
        raise DataError(f"{exc}{default}") from None


def _check_source(spec: DatasetSpec) -> None:
    """The data a spec names: none for a synthetic stream, an existing file or folder otherwise."""
    if spec.protocol.startswith("synthetic-"):
        if spec.data is not None:  # never dropped silently
            raise DataError(f"{spec.protocol} is generated, it reads no file; drop --data (or use "
                            f"{spec.protocol.removeprefix('synthetic-')} or csv)")
        return
    roles = [(spec.csv.get(f"{role}_col", role), role) for role in ("user", "item", "time")]
    for k, (col, role) in enumerate(roles):
        for other_col, other in roles[k + 1:]:
            if col == other_col:  # the same name given twice; a name and its index are caught on reading
                raise DataError(f"column {col!r} is both the {role} and the {other} column; give --{role}-col "
                                f"and --{other}-col different columns")
    if spec.scale is not None and spec.protocol in ("movielens", "csv"):
        raise DataError(f"--scale sizes the synthetic streams; {spec.protocol} is read as it is")
    if spec.scale is not None and spec.data is not None:
        raise DataError(f"--scale sizes the synthetic stream {spec.protocol} falls back to without data; "
                        f"the file given with --data is read as it is")
    if spec.protocol == "csv" and spec.data is None:
        raise DataError("the csv protocol needs --data PATH")
    what = {"yelp": "Yelp review file", "adressa": "Adressa folder", "movielens": "MovieLens ratings file",
            "csv": "CSV file"}[spec.protocol]
    if spec.data is not None and not Path(spec.data).exists():
        raise DataError(f"no {what} at {spec.data}")
    if spec.protocol == "movielens" and not data_path(spec).exists():
        where = data_path(spec).parent
        raise DataError(f"no {what} ({', '.join(MOVIELENS_FILES)}) in {where}"
                        + ("; pass --data PATH" if spec.data is None else ""))


def split_of(spec: DatasetSpec, protocol: Protocol, n_periods: int) -> Split:
    """The train/validation/test split of ``n_periods`` periods: --split and --retrain-start, else the
    protocol's reference split scaled to that many periods."""
    if spec.split:
        counts = parse_split(spec.split)
        start = spec.retrain_start if spec.retrain_start is not None else min(
            protocol.reference_start, counts[0] - 1)
        return Split.from_counts(n_periods, *counts, start)
    split = Split.scaled(n_periods, protocol.reference_split, protocol.reference_start)
    if spec.retrain_start is not None:
        split = Split.from_counts(n_periods, split.train[1] + 1,
                                  split.validation[1] - split.validation[0] + 1,
                                  split.test[1] - split.test[0] + 1, spec.retrain_start)
    return split


def load_dataset(spec: DatasetSpec, progress=None) -> Dataset:
    check_spec(spec)
    protocol = PROTOCOLS[spec.protocol]
    source, synthetic_, raw, cut_kind = _source_and_raw(spec, protocol, progress)
    if synthetic_ and not spec.protocol.startswith("synthetic-"):
        # The fallback stream follows its synthetic protocol's filters (the same as the real one's).
        protocol = PROTOCOLS[f"synthetic-{spec.protocol}"]

    min_user = spec.min_user_interactions if spec.min_user_interactions is not None else protocol.min_user
    min_item = spec.min_item_interactions if spec.min_item_interactions is not None else protocol.min_item
    if spec.period_length:
        cut = fixed_window_cut(readers.parse_duration(spec.period_length), spec.period_length)
    elif cut_kind == "oslo" and spec.periods is None:
        cut = adressa_cut
    else:
        n_periods = spec.periods if spec.periods is not None else sum(protocol.reference_split)
        left = " left after filtering" if max(min_user, min_item) > 1 else ""

        def too_few(n: int) -> str:
            if spec.periods is not None:
                why = f"asked for with --periods {n_periods}"
            else:
                why = f"that {spec.protocol} is cut into by default"
            fix = (f"pass --periods N with N from 4 to {n}" if n >= 4 else
                   "too few for the 4 periods a train/validation/test split needs")
            return f"{source}: {n} interactions{left} are fewer than the {n_periods} periods {why}; {fix}"

        cut = equal_count_cut(n_periods, too_few)

    def split_for(n_periods: int) -> Split:
        return split_of(spec, protocol, n_periods)

    if len(raw.users) == 0 and spec.protocol in EXPECTED_FORMAT:
        raise DataError(f"{spec.protocol}: no interactions could be read from {source}; expected "
                        f"{EXPECTED_FORMAT[spec.protocol]}")
    params = spec.as_dict()
    if not synthetic_:  # the file or folder actually read: the store fingerprints it
        params["resolved_data"] = str(data_path(spec).resolve())
        if spec.protocol in READING_VERSION:  # a store must not take data read the old way for this
            params["reading"] = READING_VERSION[spec.protocol]
    dataset = build_dataset(
        raw, name=spec.protocol, source=source, is_synthetic=synthetic_, params=params,
        min_user=min_user, min_item=min_item, cut=cut, split_for=split_for,
    )
    empty = [t for t in range(dataset.split.retrain_start, dataset.n_periods)
             if dataset.offsets[t + 1] == dataset.offsets[t]]
    if empty:  # (a gap in the data, a night slot of a tiny news stream) nothing to train on or score there
        shown = ", ".join(map(str, empty[:8])) + (", ..." if len(empty) > 8 else "")
        fix = (f"; a longer --period-length than {spec.period_length}, or --periods N, avoids them"
               if spec.period_length else "")
        start = dataset.split.retrain_start
        dataset.notes.append(f"{len(empty)} of the {dataset.n_periods - start} periods from the retraining start "
                             f"(period {start}) on have no interactions (periods {shown}): every method keeps "
                             f"its model through them, and they stay out of the means{fix}")
    if dataset.n_periods != sum(protocol.reference_split) and not spec.split:
        s = dataset.split
        dataset.notes.append(
            f"{dataset.n_periods} periods instead of {sum(protocol.reference_split)}: split scaled to "
            f"{s.train[1] + 1}/{s.validation[1] - s.validation[0] + 1}/{s.test[1] - s.test[0] + 1}, "
            f"retraining from period {s.retrain_start}"
        )
    if spec.split and spec.retrain_start is None and dataset.split.retrain_start != protocol.reference_start:
        dataset.notes.append(  # --split with fewer training periods than the protocol's start needs
            f"retraining from period {dataset.split.retrain_start}, the last before validation, not the protocol's "
            f"{protocol.reference_start}: --split {spec.split} has {dataset.split.train[1] + 1} training periods "
            "(--retrain-start picks another)")
    return dataset
