"""The shape every dataset protocol produces: a time-ordered interaction stream cut into periods.

A protocol (yelp, adressa, movielens, csv, synthetic-*) turns a raw source into a :class:`Dataset`:
filtered, with dense integer ids assigned in order of first appearance (so a larger id is a later
arrival), sorted by time and cut into periods, plus the train/validation/test period ranges and the
period where retraining starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

MIN_PERIODS = 4  # training (with a retraining period after the first), validation, test


class DataError(Exception):
    """Bad input: the message is one line meant for the user; the CLI exits with code 2."""


@dataclass(frozen=True)
class Split:
    """Period ranges of a protocol (inclusive bounds) and the first period that is retrained on."""

    n_periods: int
    train: tuple[int, int]
    validation: tuple[int, int]
    test: tuple[int, int]
    retrain_start: int

    def split_of(self, period: int) -> str:
        if period < self.retrain_start:
            return "pretrain"
        if period <= self.train[1]:
            return "train"
        if period <= self.validation[1]:
            return "validation"
        return "test"

    @classmethod
    def from_counts(cls, n_periods: int, n_train: int, n_validation: int, n_test: int,
                    retrain_start: int) -> Split:
        if n_test < 1 or n_train < 1:  # (no validation period is allowed: nothing is tuned then)
            raise DataError(f"split {n_train}/{n_validation}/{n_test}: train and test need at least one period "
                            "(validation may have none)")
        if n_train + n_validation + n_test != n_periods:
            total = n_train + n_validation + n_test
            val = max(1, round(n_periods * n_validation / total)) if n_validation else 0
            test = max(1, round(n_periods * n_test / total))
            if n_periods - val - test <= retrain_start:  # the retraining start must stay inside training
                rest = n_periods - retrain_start - 1
                test = max(1, round(rest * n_test / (n_validation + n_test)))
                val = rest - test if n_validation else 0
            train = n_periods - val - test
            hint = (f"; with the same shares, {train}/{val}/{test} does"
                    if train >= 2 and train > retrain_start and val >= 0 and test >= 1 else "")
            raise DataError(f"split {n_train}/{n_validation}/{n_test} does not add up to {n_periods} periods{hint}")
        if not 1 <= retrain_start <= n_train - 1:
            raise DataError(
                f"retraining start {retrain_start} must lie inside the training periods 1..{n_train - 1}"
            )
        return cls(
            n_periods=n_periods,
            train=(0, n_train - 1),
            validation=(n_train, n_train + n_validation - 1),
            test=(n_train + n_validation, n_periods - 1),
            retrain_start=retrain_start,
        )

    @classmethod
    def scaled(cls, n_periods: int, reference: tuple[int, int, int], reference_start: int) -> Split:
        """The reference split (e.g. 48/5/10, start 20 for 63 periods) scaled to ``n_periods``."""
        ref_total = sum(reference)
        if n_periods == ref_total:
            return cls.from_counts(n_periods, *reference, reference_start)
        if n_periods < MIN_PERIODS:
            raise DataError(f"{n_periods} period(s) are too few for a train/validation/test split "
                            f"(at least {MIN_PERIODS})")
        n_val = max(1, round(n_periods * reference[1] / ref_total))
        n_test = max(1, round(n_periods * reference[2] / ref_total))
        n_train = n_periods - n_val - n_test
        start = min(max(1, round(n_periods * reference_start / ref_total)), n_train - 1)
        return cls.from_counts(n_periods, n_train, n_val, n_test, start)

    def as_dict(self) -> dict:
        return {
            "periods": self.n_periods,
            "train": list(self.train),
            "validation": list(self.validation),
            "test": list(self.test),
            "retrain_start": self.retrain_start,
        }


def parse_split(text: str) -> tuple[int, int, int]:
    """``"30/3/7"`` -> (30, 3, 7)."""
    try:
        parts = tuple(int(p) for p in text.split("/"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0:
        raise DataError(f"split {text!r} is not of the form TRAIN/VALIDATION/TEST, e.g. 30/3/7")
    return parts  # type: ignore[return-value]


@dataclass
class RawStream:
    """What a reader yields before filtering: ids are any non-negative ints, times unix seconds.

    ``user_names[k]`` is the file's own id behind the int ``k`` (readers intern string ids); without
    names the int itself is the raw id (the synthetic streams).
    """

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    user_names: list[str] | None = None
    item_names: list[str] | None = None


@dataclass
class PeriodData:
    """One period's interactions (views into the dataset's arrays, in time order)."""

    index: int
    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    offset: int  # position of the first interaction in the whole stream

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class Dataset:
    name: str
    source: str
    is_synthetic: bool
    params: dict
    users: np.ndarray  # int64 dense ids, sorted by (period, time)
    items: np.ndarray
    times: np.ndarray
    periods: np.ndarray  # int32, non-decreasing
    n_users: int
    n_items: int
    split: Split
    skipped_lines: int = 0
    notes: list[str] = field(default_factory=list)
    period_bounds: list[tuple[int, int]] | None = None  # (start, end) unix seconds, end exclusive
    # The source's own id of each dense id (str), to map exported cases back to the data.
    user_raw: np.ndarray | None = None
    item_raw: np.ndarray | None = None
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = np.searchsorted(self.periods, np.arange(self.split.n_periods + 1), side="left")

    @property
    def n_periods(self) -> int:
        return self.split.n_periods

    def period(self, t: int) -> PeriodData:
        lo, hi = int(self.offsets[t]), int(self.offsets[t + 1])
        return PeriodData(t, self.users[lo:hi], self.items[lo:hi], self.times[lo:hi], lo)

    def upto(self, t: int) -> PeriodData:
        """All interactions of periods 0..t (what Full-retrain trains on at period t)."""
        hi = int(self.offsets[t + 1])
        return PeriodData(t, self.users[:hi], self.items[:hi], self.times[:hi], 0)

    def period_time_range(self, t: int) -> tuple[int, int]:
        if self.period_bounds is not None:
            return self.period_bounds[t]
        p = self.period(t)
        if len(p) == 0:
            return (0, 0)
        return int(p.times[0]), int(p.times[-1]) + 1

    def first_periods(self) -> tuple[np.ndarray, np.ndarray]:
        """Period in which each user / item first appears (n_periods when never)."""
        first_u = np.full(self.n_users, self.n_periods, dtype=np.int32)
        first_i = np.full(self.n_items, self.n_periods, dtype=np.int32)
        # Reversed assignment leaves the earliest period, since the stream is period-sorted.
        first_u[self.users[::-1]] = self.periods[::-1]
        first_i[self.items[::-1]] = self.periods[::-1]
        return first_u, first_i

    @cached_property
    def first_seen_ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Per period t, one past the largest user / item id seen by the end of t. Dense ids are
        numbered in order of first appearance, so the ids first seen in period t are the range
        [ends[t-1], ends[t])."""
        ends = []
        for ids in (self.users, self.items):
            last = np.full(self.n_periods, -1, dtype=np.int64)
            for t in range(self.n_periods):
                lo, hi = int(self.offsets[t]), int(self.offsets[t + 1])
                if hi > lo:
                    last[t] = ids[lo:hi].max()
            ends.append(np.maximum.accumulate(last) + 1)
        return ends[0], ends[1]

    def period_stats(self) -> list[dict]:
        first_u, first_i = self.first_periods()
        new_u = np.bincount(first_u, minlength=self.n_periods + 1)[: self.n_periods]
        new_i = np.bincount(first_i, minlength=self.n_periods + 1)[: self.n_periods]
        counts = np.diff(self.offsets)
        rows = []
        for t in range(self.n_periods):
            start, end = self.period_time_range(t)
            rows.append({
                "index": t,
                "split": self.split.split_of(t),
                "start": start,
                "end": end,
                "interactions": int(counts[t]),
                "new_users": int(new_u[t]),
                "new_items": int(new_i[t]),
            })
        return rows

    def summary(self) -> dict:
        return {
            "dataset": self.name,
            "source": self.source,
            "synthetic": self.is_synthetic,
            "interactions": int(len(self.users)),
            "users": self.n_users,
            "items": self.n_items,
            **self.split.as_dict(),
            "skipped_lines": self.skipped_lines,
            "period_interactions": [int(c) for c in np.diff(self.offsets)],
            "notes": list(self.notes),
        }


def densify(values: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Map ids to 0..n-1 in order of first appearance (``values`` must already be in time order).
    Also returns the value behind each new id."""
    uniq, first_idx, inverse = np.unique(values, return_index=True, return_inverse=True)
    # Rank the unique values by where they first occur, so ids grow with arrival time.
    order = np.argsort(first_idx, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq), dtype=np.int64)
    return rank[inverse].astype(np.int64), len(uniq), uniq[order]


def _raw_names(values: np.ndarray, names: list[str] | None) -> np.ndarray:
    """The source's ids (str) of the raw ints ``values``."""
    if names is None:
        return values.astype(str).astype(object)
    return np.asarray(names, dtype=object)[values]


def filter_counts(raw: RawStream, min_user: int, min_item: int) -> RawStream:
    """Drop interactions of users with < min_user and items with < min_item interactions.

    One pass with counts over the unfiltered stream (as the paper describes its cut); not an
    iterated k-core, so a few kept users can end up just below ``min_user``.
    """
    keep = np.ones(len(raw.users), dtype=bool)
    if min_user > 1:
        _, inv, cnt = np.unique(raw.users, return_inverse=True, return_counts=True)
        keep &= cnt[inv] >= min_user
    if min_item > 1:
        _, inv, cnt = np.unique(raw.items, return_inverse=True, return_counts=True)
        keep &= cnt[inv] >= min_item
    return RawStream(raw.users[keep], raw.items[keep], raw.times[keep], raw.skipped, raw.notes,
                     raw.user_names, raw.item_names)


def equal_count_periods(n: int, n_periods: int) -> np.ndarray:
    """Period of each of ``n`` time-sorted interactions when cut into equal-count periods."""
    if n < n_periods:
        raise DataError(f"{n} interactions are fewer than the {n_periods} periods asked for")
    return (np.arange(n, dtype=np.int64) * n_periods // n).astype(np.int32)


def build_dataset(
    raw: RawStream,
    *,
    name: str,
    source: str,
    is_synthetic: bool,
    params: dict,
    min_user: int,
    min_item: int,
    cut,
    split_for,
) -> Dataset:
    """Filter, sort by time, densify ids, cut periods (``cut(times) -> (periods, bounds)``, or
    ``(periods, bounds, notes)`` when the cut has something to say)."""
    if len(raw.users) == 0:
        raise DataError(f"{name}: no interactions could be read from {source}")
    filtered = filter_counts(raw, min_user, min_item)
    if len(filtered.users) == 0:
        raise DataError(
            f"{name}: nothing is left after dropping users with < {min_user} and items with < {min_item} "
            f"interactions ({len(raw.users)} read); lower --min-user-interactions/--min-item-interactions"
        )
    order = np.argsort(filtered.times, kind="stable")
    times = filtered.times[order].astype(np.int64)
    periods, bounds, *cut_notes = cut(times)
    n_periods = int(periods.max()) + 1 if bounds is None else len(bounds)
    # Periods are non-decreasing in time, so this sort keeps time order inside each period.
    users, n_users, user_values = densify(filtered.users[order])
    items, n_items, item_values = densify(filtered.items[order])
    split = split_for(n_periods)
    notes = list(raw.notes) + [n for group in cut_notes for n in group]
    if not is_synthetic:
        duplicates = _exact_duplicates(users, items, times, n_items)
        if duplicates:  # kept: a file may log an interaction twice on purpose, but usually not
            notes.append(f"{duplicates} interaction(s) repeat an earlier one exactly (same user, item and "
                         "time); they are kept, each as an interaction")
    return Dataset(
        name=name, source=source, is_synthetic=is_synthetic, params=params,
        users=users, items=items, times=times, periods=periods.astype(np.int32),
        n_users=n_users, n_items=n_items, split=split, skipped_lines=raw.skipped,
        notes=notes, period_bounds=bounds,
        user_raw=_raw_names(user_values, filtered.user_names), item_raw=_raw_names(item_values, filtered.item_names),
    )


def _exact_duplicates(users: np.ndarray, items: np.ndarray, times: np.ndarray, n_items: int) -> int:
    """How many rows repeat an earlier (user, item, time) exactly."""
    if len(users) < 2:
        return 0
    pair = users.astype(np.int64) * n_items + items
    order = np.lexsort((pair, times))
    pair, t = pair[order], times[order]
    return int(((pair[1:] == pair[:-1]) & (t[1:] == t[:-1])).sum())
