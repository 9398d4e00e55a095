"""Next-period evaluation (paper 4.1.3): sampled and full-ranking ranks of every test positive.

Every interaction of the evaluated period is a test case. Its positive is ranked

* against ``n_negatives`` (999) items drawn once per period with a fixed seed and shared by all
  methods: distinct items, seen up to and including the evaluated period, that the user has never
  interacted with up to the end of that period. When a user has fewer such items, all of them are
  used and the case ranks among fewer candidates (``n_candidates`` records how many);
* against all items seen so far, excluding the user's other interacted items (full ranking), since
  sampled metrics can reorder methods (Krichene & Rendle, KDD 2020).

Ranks are 0-based. Equal scores are broken at random (a uniform draw per case, shared by all
methods), so a constant scorer ranks the positive uniformly and never gets a free top rank. (In the
full ranking, ties are counted in the chunks of cases whose sampled candidates show one; see
``rank_cases``.)
Recall@K = 1[rank < K]; NDCG@K = 1[rank < K] / log2(rank + 2).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from sml_sim.data.base import Dataset

KS = (5, 10, 20)
N_NEGATIVES = 999


@dataclass
class CaseSet:
    """The test cases of one period and their shared candidates."""

    period: int
    users: np.ndarray  # int64 [n]
    items: np.ndarray  # int64 [n]
    positions: np.ndarray  # int64 [n]: index in the whole stream (what came before a case)
    new_user: np.ndarray  # bool [n]: user first seen in this period
    new_item: np.ndarray  # bool [n]
    n_universe: int  # items seen up to the end of this period: ids 0..n_universe-1
    negatives: np.ndarray  # int32 [n, n_negatives], -1 padded
    n_candidates: np.ndarray  # int32 [n]: 1 + valid negatives
    tie_break: np.ndarray  # float32 [n] in [0, 1)
    hist_user: np.ndarray  # int64: local user index of each history pair (sorted)
    hist_item: np.ndarray  # int64: item of each history pair
    hist_indptr: np.ndarray  # CSR over local users
    case_local_user: np.ndarray  # int64 [n]
    local_user_ids: np.ndarray  # int64: the dataset user id of each local user (sorted)

    def __len__(self) -> int:
        return len(self.users)

    def tensor(self, name: str, device: torch.device) -> torch.Tensor:
        """A case array as a tensor on ``device``, uploaded once per period (not per chunk)."""
        cache = self.__dict__.setdefault("_tensors", {})
        key = (name, str(device))
        if key not in cache:
            cache[key] = torch.as_tensor(np.ascontiguousarray(getattr(self, name)), device=device)
        return cache[key]

    def by_user(self) -> tuple[np.ndarray, np.ndarray]:
        """(order, ptr): the cases sorted by local user (stable); those of local user j are
        order[ptr[j]:ptr[j + 1]]. Computed once per period and shared by every method."""
        cache = self.__dict__.setdefault("_by_user", [])
        if not cache:
            order = np.argsort(self.case_local_user, kind="stable")
            cache.extend([order, np.searchsorted(self.case_local_user[order], np.arange(len(self.local_user_ids) + 1))])
        return cache[0], cache[1]

    def history_pairs(self, lo: int, hi: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(row - lo, item) for every history item of the cases lo..hi-1."""
        indptr = self.tensor("hist_indptr", device)
        lu = self.tensor("case_local_user", device)[lo:hi]
        starts = indptr[lu]
        counts = indptr[lu + 1] - starts
        row_idx = torch.repeat_interleave(torch.arange(hi - lo, device=device), counts)
        first = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
        return row_idx, self.tensor("hist_item", device)[first + torch.arange(len(first), device=device)]


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def build_cases(dataset: Dataset, period: int, seed: int, n_negatives: int = N_NEGATIVES) -> CaseSet:
    p = dataset.period(period)
    end = int(dataset.offsets[period + 1])
    start = int(dataset.offsets[period])
    users = p.users.astype(np.int64)
    items = p.items.astype(np.int64)
    n_universe = int(dataset.items[:end].max()) + 1 if end else 0  # ids grow with first appearance
    seen_users_before = int(dataset.users[:start].max()) + 1 if start else 0
    seen_items_before = int(dataset.items[:start].max()) + 1 if start else 0

    # Each case user's history up to the end of the period, as a CSR of distinct items.
    case_users, case_local_user = np.unique(users, return_inverse=True)
    in_set = np.isin(dataset.users[:end], case_users)
    h_user = np.searchsorted(case_users, dataset.users[:end][in_set])
    h_item = dataset.items[:end][in_set].astype(np.int64)
    keys = np.sort(h_user * n_universe + h_item)
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys
    hist_user, hist_item = keys // n_universe, keys % n_universe
    hist_indptr = np.searchsorted(hist_user, np.arange(len(case_users) + 1))

    rng = _rng(seed, 7919, period)
    negatives = np.empty((len(users), n_negatives), dtype=np.int32)
    eligible = n_universe - np.diff(hist_indptr)  # per local user
    # Rejection sampling is fast while eligible items are plentiful; near the limit it would
    # stall (coupon collector), so those users draw from their explicit pool instead.
    plenty = eligible[case_local_user] >= 4 * n_negatives
    negatives[~plenty] = -1
    rows = np.flatnonzero(plenty)
    if len(rows):
        negatives[rows] = _sample_distinct((seed, 7919, period), keys, hist_indptr, hist_item, case_local_user[rows],
                                           n_universe, n_negatives)
    for lu in np.unique(case_local_user[~plenty]):
        pool = np.setdiff1d(np.arange(n_universe), hist_item[hist_indptr[lu]:hist_indptr[lu + 1]])
        case_rows = np.flatnonzero(case_local_user == lu)
        if len(pool) <= n_negatives:  # too few: every eligible item is a candidate
            negatives[case_rows, : len(pool)] = pool
        else:
            keys_ = rng.random((len(case_rows), len(pool)))
            negatives[case_rows] = pool[np.argpartition(keys_, n_negatives - 1, axis=1)[:, :n_negatives]]
    n_candidates = (1 + (negatives >= 0).sum(1)).astype(np.int32)

    return CaseSet(
        period=period, users=users, items=items, positions=np.arange(start, end, dtype=np.int64),
        new_user=users >= seen_users_before, new_item=items >= seen_items_before, n_universe=n_universe,
        negatives=negatives, n_candidates=n_candidates,
        tie_break=_rng(seed, 104729, period).random(len(users)).astype(np.float32),
        hist_user=hist_user, hist_item=hist_item, hist_indptr=hist_indptr,
        case_local_user=case_local_user.astype(np.int64), local_user_ids=case_users.astype(np.int64),
    )


def _in_sorted(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    if len(haystack) == 0:
        return np.zeros(needles.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(haystack, needles), len(haystack) - 1)
    return haystack[pos] == needles


def _sample_distinct(seed_keys: tuple[int, ...], hist_keys: np.ndarray, hist_indptr: np.ndarray,
                     hist_item: np.ndarray, local_users: np.ndarray, n_universe: int, k: int,
                     chunk: int = 8192) -> np.ndarray:
    """k distinct items per row, none in the row user's history, uniform over such k-subsets.

    Each row starts as k sorted i.i.d. uniform draws (order statistics from exponential spacings,
    so no sort is needed and duplicates are neighbours). The distinct values that avoid the history
    are a uniform subset of the eligible items (every eligible item plays the same role); each
    duplicate or history hit is then replaced by a fresh draw that is neither in the row nor in the
    history, which keeps the set uniform. History hits are found by looking each history item up in
    the row (users' histories are short next to k), or each draw up in the history when it is long.
    Chunks of rows have their own seeded generators, so they run on torch's thread count (numpy
    releases the GIL) and the result does not depend on it.
    """
    n_rows = len(local_users)
    out = np.empty((n_rows, k), dtype=np.int32)
    hist_len = np.diff(hist_indptr)
    span = np.int64(n_universe)

    def sample_chunk(lo: int) -> None:
        rng = _rng(*seed_keys, 1 + lo // chunk)
        lu = local_users[lo:lo + chunk]
        b = len(lu)
        cum = np.cumsum(rng.standard_exponential((b, k + 1)), axis=1)
        draws = np.minimum((cum[:, :k] / cum[:, k:] * n_universe).astype(np.int64), n_universe - 1)
        del cum
        row_base = np.arange(b, dtype=np.int64) * span
        row_keys = (draws + row_base[:, None]).ravel()  # sorted: rows in order, each row sorted
        bad = np.zeros((b, k), dtype=bool)
        bad[:, 1:] = draws[:, 1:] == draws[:, :-1]
        bad = bad.ravel()
        short = hist_len[lu] <= k
        rows = np.flatnonzero(short)
        if len(rows):
            counts = hist_len[lu[rows]]
            first = np.repeat(hist_indptr[lu[rows]] - (np.cumsum(counts) - counts), counts)
            needles = np.repeat(row_base[rows], counts) + hist_item[first + np.arange(int(counts.sum()))]
            pos = np.minimum(np.searchsorted(row_keys, needles), len(row_keys) - 1)
            bad[pos[row_keys[pos] == needles]] = True
        rows = np.flatnonzero(~short)
        if len(rows):
            bad.reshape(b, k)[rows] |= _in_sorted(hist_keys, (lu[rows] * span)[:, None] + draws[rows])
        slots = np.flatnonzero(bad)
        accepted = np.empty(0, dtype=np.int64)  # keys of replacements placed so far, sorted
        for _ in range(1000):
            if not len(slots):
                break
            r = slots // k
            v = rng.integers(0, n_universe, len(slots))
            key = row_base[r] + v
            ok = ~(_in_sorted(row_keys, key) | _in_sorted(accepted, key) | _in_sorted(hist_keys, lu[r] * span + v))
            first_of_key = np.zeros(len(key), dtype=bool)
            first_of_key[np.unique(key, return_index=True)[1]] = True
            ok &= first_of_key
            draws.ravel()[slots[ok]] = v[ok]
            accepted = np.sort(np.concatenate([accepted, key[ok]]))
            slots = slots[~ok]
        else:  # pragma: no cover - needs an astronomically unlucky stream of draws
            raise RuntimeError("negative sampling did not converge")
        out[lo:lo + b] = draws

    threads = max(1, torch.get_num_threads())
    starts = range(0, n_rows, chunk)
    if threads == 1 or len(starts) == 1:
        for lo in starts:
            sample_chunk(lo)
    else:
        list(_pool(threads).map(sample_chunk, starts))
    return out


@dataclass
class Ranks:
    sampled: np.ndarray  # int32 [n]
    full: np.ndarray  # int32 [n]


class ScoringError(Exception):
    """A model produced unusable scores (NaN/inf) for the positives."""


_POOL: ThreadPoolExecutor | None = None


def _count_above(scores: torch.Tensor, p: torch.Tensor, equal: bool = False) -> torch.Tensor:
    """Per row, how many scores exceed (or equal) the row's p.

    On the CPU numpy's comparison and count_nonzero are several times faster than torch's bool
    reduction; they release the GIL, so the rows are split over torch's thread count.
    """
    if scores.device.type != "cpu":
        return ((scores == p) if equal else (scores > p)).sum(1)
    s, q = scores.numpy(), p.numpy()

    def count(lo: int, hi: int) -> np.ndarray:
        block = (s[lo:hi] == q[lo:hi]) if equal else (s[lo:hi] > q[lo:hi])
        return np.count_nonzero(block, axis=1)

    return torch.from_numpy(np.concatenate(_over_threads(len(s), count)))


def _count_rows_above(scores: torch.Tensor, rows: torch.Tensor, p: torch.Tensor, equal: bool = False) -> torch.Tensor:
    """For each case i, how many entries of scores[rows[i]] exceed (or equal) p[i].

    On the CPU each case compares its user's row in place (no copy of the row per case); a user's
    cases are neighbours, so the row is still in cache for the second one. Cases are split over
    torch's thread count (numpy releases the GIL while it compares).
    """
    if scores.device.type != "cpu":
        out = torch.empty(len(rows), dtype=torch.long, device=scores.device)
        step = max(1, (1 << 24) // max(1, scores.shape[1]))
        for lo in range(0, len(rows), step):
            block, q = scores[rows[lo:lo + step]], p[lo:lo + step, None]
            out[lo:lo + step] = ((block == q) if equal else (block > q)).sum(1)
        return out
    s, r, q = scores.numpy(), rows.numpy(), p.numpy()
    op = np.equal if equal else np.greater
    counts = np.empty(len(r), dtype=np.int64)

    def count(lo: int, hi: int) -> None:
        flags = np.empty(s.shape[1], dtype=bool)
        for i in range(lo, hi):
            op(s[r[i]], q[i], out=flags)
            counts[i] = np.count_nonzero(flags)

    _over_threads(len(r), count)
    return torch.from_numpy(counts)


def _over_threads(n: int, work) -> list:
    """work(lo, hi) over 0..n split into one contiguous part per torch thread (numpy releases the
    GIL in the heavy parts); the parts' results, in order."""
    threads = max(1, torch.get_num_threads())
    if threads == 1 or n < 2 * threads:
        return [work(0, n)]
    bounds = np.linspace(0, n, threads + 1).astype(int)
    return list(_pool(threads).map(lambda k: work(bounds[k], bounds[k + 1]), range(threads)))


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL._max_workers != threads:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sml-sim-rank")
    return _POOL


def _rank_by_user(scorer, cases: CaseSet, device: torch.device, max_chunk_elems: int) -> Ranks:
    """rank_cases for scorers whose scores depend on the user only (MF, SML): one score row per
    distinct user, shared by the user's cases of the period (a Yelp period has ~4 per user)."""
    n, m = len(cases), cases.n_universe
    order, ptr = cases.by_user()
    n_local = len(cases.local_user_ids)
    block = max(1, min(n_local, max_chunk_elems // max(1, m)))
    buffer = torch.empty(block, m, device=device)
    user_ids = cases.tensor("local_user_ids", device)
    sampled = torch.empty(n, dtype=torch.long, device=device)
    full = torch.empty(n, dtype=torch.long, device=device)
    for a in range(0, n_local, block):
        b = min(n_local, a + block)
        scores = scorer.score_users(user_ids[a:b], m, out=buffer[:b - a])
        if scores.shape != (b - a, m):
            raise ScoringError(f"scorer returned shape {tuple(scores.shape)}, expected {(b - a, m)}")
        idx = torch.as_tensor(order[ptr[a]:ptr[b]], device=device)
        rows = cases.tensor("case_local_user", device)[idx] - a
        flat = scores.reshape(-1)  # a view: the scorer wrote into the contiguous buffer
        base = rows * m
        pos = flat[base + cases.tensor("items", device)[idx]]
        if not torch.isfinite(pos).all():
            raise ScoringError("non-finite scores (NaN or inf) for test positives")
        neg_idx = cases.tensor("negatives", device)[idx]
        valid = neg_idx >= 0
        neg = flat[base[:, None] + neg_idx.clamp(min=0).long()]
        p = pos[:, None]
        s_gt = ((neg > p) & valid).sum(1)
        s_eq = ((neg == p) & valid).sum(1)
        del neg
        # The user's interacted items (each positive among them) leave the full ranking.
        lo_h, hi_h = int(cases.hist_indptr[a]), int(cases.hist_indptr[b])
        scores[cases.tensor("hist_user", device)[lo_h:hi_h] - a, cases.tensor("hist_item", device)[lo_h:hi_h]] = float("-inf")
        u = cases.tensor("tie_break", device)[idx]
        full_rank = _count_rows_above(scores, rows, pos).to(device)
        if bool(s_eq.any()):
            full_rank = full_rank + torch.floor(u * (_count_rows_above(scores, rows, pos, equal=True).to(device) + 1)).long()
        full[idx] = full_rank
        sampled[idx] = s_gt + torch.floor(u * (s_eq + 1)).long()
    return Ranks(sampled.cpu().numpy().astype(np.int32), full.cpu().numpy().astype(np.int32))


def rank_cases(scorer, cases: CaseSet, device: torch.device, max_chunk_elems: int = 1 << 25) -> Ranks:
    """Rank every case's positive, both among its sampled candidates and among all items seen.

    ``scorer.score(cases, rows, n_items)`` returns a [len(rows), n_items] score matrix for the given
    cases against items 0..n_items-1 (the universe). One matrix product per chunk for MF.

    Ties among all items are counted only in chunks where the sampled candidates show a tie: the
    negatives are a uniform sample of the same items, so a scorer with ties (most popular, or a
    collapsed model) shows them there, while for continuous scores the extra pass over every item
    would almost surely count zero.
    """
    n, m = len(cases), cases.n_universe
    if n and hasattr(scorer, "score_users"):
        return _rank_by_user(scorer, cases, device, max_chunk_elems)
    sampled_parts: list[torch.Tensor] = []
    full_parts: list[torch.Tensor] = []
    if n == 0:
        return Ranks(np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32))
    chunk = max(1, min(n, max_chunk_elems // max(1, m)))
    # Scorers that can write into a given tensor reuse one buffer for every chunk: a fresh
    # [chunk, m] allocation per chunk costs as much in page faults as the matrix product itself.
    buffer = torch.empty(chunk, m, device=device) if getattr(scorer, "scores_into_buffer", False) else None
    for lo in range(0, n, chunk):
        rows = np.arange(lo, min(n, lo + chunk))
        b = len(rows)
        if buffer is not None:
            scores = scorer.score(cases, rows, m, out=buffer[:b])
        else:
            scores = scorer.score(cases, rows, m).to(device=device, dtype=torch.float32)
        if scores.shape != (b, m):
            raise ScoringError(f"scorer returned shape {tuple(scores.shape)}, expected {(b, m)}")
        hi = lo + b
        pos = scores[torch.arange(b, device=device), cases.tensor("items", device)[lo:hi]].clone()
        if not torch.isfinite(pos).all():
            raise ScoringError("non-finite scores (NaN or inf) for test positives")
        neg_idx = cases.tensor("negatives", device)[lo:hi]
        valid = neg_idx >= 0
        neg = scores.gather(1, neg_idx.clamp(min=0).long())
        # The user's interacted items (the positive among them) leave the full ranking.
        h_rows, h_items = cases.history_pairs(lo, hi, device)
        scores[h_rows, h_items] = float("-inf")
        u = cases.tensor("tie_break", device)[lo:hi]
        p = pos[:, None].contiguous()
        s_gt = ((neg > p) & valid).sum(1)
        s_eq = ((neg == p) & valid).sum(1)
        full_gt = _count_above(scores, p).to(device)
        full_rank = full_gt
        if bool(s_eq.any()):
            full_rank = full_gt + torch.floor(u * (_count_above(scores, p, equal=True).to(device) + 1)).long()
        full_parts.append(full_rank)
        sampled_parts.append(s_gt + torch.floor(u * (s_eq + 1)).long())
    # One copy to the host per period and method, not per chunk.
    return Ranks(torch.cat(sampled_parts).cpu().numpy().astype(np.int32),
                 torch.cat(full_parts).cpu().numpy().astype(np.int32))


def small_catalogue_note(n_items: int) -> str | None:
    """What a catalogue too small for the paper's 1 + 999 candidates does to the sampled figures."""
    if n_items > N_NEGATIVES:
        return None
    return (f"only {n_items} items: the sampled ranking uses every candidate a case has (at most {n_items} "
            f"instead of 1 + {N_NEGATIVES}), so its figures are not comparable with the paper's"
            + ("; with 20 items or fewer every case is a hit at 20" if n_items <= 20 else ""))


def metrics_from_ranks(sampled: np.ndarray, full: np.ndarray, ks=KS) -> dict[str, float]:
    out: dict[str, float] = {}
    for prefix, ranks in (("", sampled), ("full_", full)):
        r = np.asarray(ranks, dtype=np.float64)
        for k in ks:
            hit = r < k
            out[f"{prefix}recall@{k}"] = float(hit.mean()) if len(r) else float("nan")
            out[f"{prefix}ndcg@{k}"] = float((hit / np.log2(r + 2)).mean()) if len(r) else float("nan")
    return out


METRIC_KEYS = [f"{p}{m}@{k}" for p in ("", "full_") for m in ("recall", "ndcg") for k in KS]
