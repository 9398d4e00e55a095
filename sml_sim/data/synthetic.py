"""Built-in synthetic streams that stand in for Yelp and Adressa (which cannot be shipped).

Both generators are seeded and deterministic, vectorised with numpy (Python loops run per time
block or per rejection round, never per interaction), and sized by ``scale``: 1.0 gives the
paper's sizes *after* its protocol filters (Yelp 3.0M interactions / 59k users / 123k items,
Adressa 3.66M / 479k / 21k), and users, items and interactions all scale linearly with it.
Scale 1.0 takes roughly 15 s (Yelp-like) and 10 s (Adressa-like) and well under 1 GB.

Yelp-like (``generate_yelp_like``): ten years, 2008-01-01 .. 2018-01-01 UTC
---------------------------------------------------------------------------
* Time x runs over [0, 1] (one decade). Activity grows over the years (about 1% of the
  interactions fall in 2008, about 20% in 2017), so the protocol's 40 equal-count periods are
  long at first and a few months each at the end.
* Latent factors: 24 taste clusters (think city x cuisine) in 16 dimensions. An item's vector is
  its cluster centre plus noise; a user's long-term taste mixes two cluster centres plus noise and
  drifts slowly along a personal direction (one unit per decade against a base of norm 1), so
  what a user liked years ago still predicts what they like now.
* Arrivals: users and items arrive throughout the decade, more per year as the site grows; new
  businesses thin out over the last two to three years, because only those that collect 20
  reviews survive the protocol's filter (the survivor bias the real filtered data has too; it
  also keeps activity from piling up at the end). Items stay open for years (some close) and
  collect their first 20 reviews over a horizon of 3-10 years; item popularity is log-normal and
  changes slowly (a small trend per item).
* Interactions are drawn in two phases, both as "sample a consideration set, then choose by
  taste": 32 candidates, then a softmax over beta * taste(t) . item by the Gumbel-max trick.
  1. Every item gets exactly 20 interactions at times spread over its horizon; for each, the
     reviewer is chosen among users active at that time (candidates drawn by activity rate).
  2. The rest come from users: each user is topped up to at least 10 and the remainder is shared
     by how far each is below a heavy-tailed activity target; the times are spread over the
     user's active span (a few years on average), the item chosen among open items (candidates
     drawn by current popularity).
  A repeated (user, item) pair is re-drawn (people review a business once). So the protocol's
  10/20 filter keeps the whole stream, and since tastes persist and items live long, over 90% of
  the test periods' interactions are an old user on an old item: a model trained on all history
  beats one fine-tuned period by period (Full-retrain's home ground).

Adressa-like (``generate_adressa_like``): 21 Europe/Oslo days from 2017-01-01 00:00 local
---------------------------------------------------------------------------------------
* Articles are published throughout the 21 days, mostly in daytime. Each article's total clicks
  are heavy-tailed (capped log-normal weights); its clicks follow a burst at publication that
  decays exponentially with an article-specific time constant (median 2 h), thinned by a daily
  reading rhythm that is low at night. Half of a typical article's clicks come within about an
  hour or two of its first one, and some 70% of the clicks in any period go to articles first
  seen in that same period (Fine-tune's home ground).
* Latent factors: 16 news topics. An article has a main topic (80% of its clicks) and a second
  one; a user has Dirichlet topic preferences, concentrated on a few topics. Each click of an
  article goes to a reader who wants that topic: a per-topic random matching of article click
  slots to user click slots, so P(user, article) is proportional to activity x topic affinity, a
  non-negative rank-16 factor model. Repeated (user, article) pairs are traded away by swaps.
* Users: 1 click plus a multinomial share of the rest by capped log-normal weights: about two
  thirds of the users click 1-3 times (median 2), a few click hundreds of times, 7.66 clicks per
  user on average (the paper's ratio).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# RawStream lives with the other dataset shapes; re-exported here for the generator's callers.
from sml_sim.data.base import RawStream

__all__ = [
    "ADRESSA_DEFAULT_SCALE",
    "ADRESSA_FULL",
    "ADRESSA_START",
    "ADRESSA_DAYS",
    "RawStream",
    "YELP_DEFAULT_SCALE",
    "YELP_END",
    "YELP_FULL",
    "YELP_START",
    "generate_adressa_like",
    "generate_yelp_like",
]

# (interactions, users, items) after the paper's protocol filters: the sizes at scale 1.0.
YELP_FULL = (3_014_421, 59_082, 122_816)
ADRESSA_FULL = (3_664_225, 478_612, 20_875)

# Defaults small enough to replay in seconds: ~48k (Yelp-like) and ~55k (Adressa-like) interactions.
YELP_DEFAULT_SCALE = 0.016
ADRESSA_DEFAULT_SCALE = 0.015

YELP_START = 1_199_145_600  # 2008-01-01 00:00:00 UTC
YELP_END = 1_514_764_800  # 2018-01-01 00:00:00 UTC
ADRESSA_START = 1_483_225_200  # 2017-01-01 00:00:00 Europe/Oslo (CET, UTC+1)
# 2017-01-01 .. 2017-01-21 has no daylight-saving change, so every local day is 86,400 s long and
# local time of day is simply (t - ADRESSA_START) mod 86,400.
ADRESSA_DAYS = 21

# ------------------------------------------------------------------ Yelp-like parameters
_Y_MIN_USER = 10  # the protocol's filters; the generator guarantees both
_Y_MIN_ITEM = 20
_Y_GROWTH = 0.5  # activity density ~ exp(growth * x), x in decades
_Y_DIM = 16
_Y_CLUSTERS = 24
_Y_NOISE = 0.5  # spread of vectors around their cluster centres
_Y_DRIFT = 1.0  # taste drift per decade (the base taste vector has norm 1)
_Y_BETA = 8.0  # softmax inverse temperature on taste . item (unit vectors)
_Y_CANDIDATES = 32
_Y_REDRAW_ROUNDS = 10
_Y_BLOCKS = 120  # monthly blocks: popularity and "who is active" are refreshed per block
_Y_ITEM_LIFE_MIN = 0.15  # decades an item is open at least, plus an exponential with this mean:
_Y_ITEM_LIFE_MEAN = 1.5
_Y_ITEM_HORIZON = (0.3, 1.0)  # decades, uniform
_Y_ITEM_ARRIVAL_GROWTH = 1.5
_Y_USER_ARRIVAL_GROWTH = 0.3
_Y_USER_SPAN_MIN = 0.03  # decades a user is active at least, plus an exponential with this mean:
_Y_USER_SPAN_MEAN = 0.35
_Y_USER_SIGMA = 1.2  # log-normal spread of user activity
_Y_POP_SIGMA = 0.8  # log-normal spread of item popularity
_Y_POP_TREND = 0.8  # sd of each item's log-popularity trend per decade


def _y_item_arrival(x: np.ndarray) -> np.ndarray:
    # More new businesses every year; the factor thins those that arrive too late to collect
    # their 20 reviews in a normal horizon (survivor bias of the filter), which also keeps the
    # activity density from piling up in the last years.
    lo, hi = _Y_ITEM_HORIZON
    r = np.clip(1.0 - x, 0.0, None)
    mid = np.clip(r, lo, hi)
    expected_window = ((mid**2 - lo**2) / 2 + r * (hi - mid)) / (hi - lo)  # E[min(H, 1 - x)]
    expected_window = np.where(r < lo, r, expected_window)
    return np.exp(_Y_ITEM_ARRIVAL_GROWTH * x) * expected_window


def _y_user_arrival(x: np.ndarray) -> np.ndarray:
    return np.exp(_Y_USER_ARRIVAL_GROWTH * x) * (x < 0.98)


# ------------------------------------------------------------------ Adressa-like parameters
_A_TOPICS = 16
_A_TOPIC_CONCENTRATION = 3.0  # Dirichlet total of a user's topic preferences: small = picky
_A_MAIN_TOPIC_SHARE = 0.8
_A_TAU_MEDIAN_H = 2.0  # median decay time constant of an article's click burst (hours)
_A_TAU_SIGMA = 0.7
_A_ITEM_SIGMA = 1.3  # log-normal spread of article click counts
_A_USER_SIGMA = 1.9  # log-normal spread of user activity (gives median 2, mean 7.6 per user)
_A_USER_CAP = 60.0  # no user above 60x the mean activity (~450 clicks in three weeks)
_A_ITEM_CAP = 25.0  # no article above 25x the mean click count
_A_SWAP_ROUNDS = 12
# Relative activity by local hour 0..24 (24 = 0 again): publishing and reading are low at night.
# fmt: off
_A_PUBLISH_RHYTHM = np.array(
    [0.1, 0.05, 0.03, 0.03, 0.05, 0.2, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.95, 0.9, 0.9, 0.85,
     0.8, 0.75, 0.7, 0.6, 0.4, 0.2, 0.1]
)
_A_CLICK_RHYTHM = np.array(
    [0.25, 0.12, 0.07, 0.05, 0.06, 0.12, 0.35, 0.75, 0.95, 0.9, 0.85, 0.85, 0.9, 0.85, 0.8, 0.8,
     0.85, 0.9, 0.9, 0.95, 1.0, 0.95, 0.8, 0.55, 0.25]
)
# fmt: on
_A_MAX_ROUNDS = 200  # rejection rounds for click times; the few left after that are placed uniformly


# ------------------------------------------------------------------ helpers


def _sizes(full: tuple[int, int, int], scale: float, minimum: tuple[int, int, int]) -> tuple[int, int, int]:
    """(interactions, users, items) at ``scale``, each at least its minimum."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    n_inter, n_users, n_items = (max(lo, int(round(f * value))) for f, lo in zip(full, minimum))
    return n_inter, n_users, n_items


def _rng(seed: int, stream: int) -> np.random.Generator:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    # A per-generator stream id keeps the two generators independent for the same seed.
    return np.random.default_rng([int(seed), stream])


def _sample_density(
    density: Callable[[np.ndarray], np.ndarray], n: int, rng: np.random.Generator
) -> np.ndarray:
    """n draws on [0, 1] from an unnormalised density, by inverse CDF on a fine grid."""
    grid = np.linspace(0.0, 1.0, 4097)
    dens = density(grid)
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2)])
    return np.interp(rng.random(n) * cdf[-1], cdf, grid)


def _exp_time(lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse CDF of the Yelp activity density exp(growth * x) restricted to [lo, hi]."""
    a, b = np.exp(_Y_GROWTH * lo), np.exp(_Y_GROWTH * hi)
    return np.log(a + u * (b - a)) / _Y_GROWTH


def _exp_mass(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (np.exp(_Y_GROWTH * hi) - np.exp(_Y_GROWTH * lo)) / _Y_GROWTH


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _lognormal_weights(n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    w = rng.lognormal(0.0, sigma, n)
    return w / w.sum()


def _capped_weights(n: int, sigma: float, cap: float, rng: np.random.Generator) -> np.ndarray:
    """Log-normal weights summing to 1, none above ``cap`` times the mean (clip, renormalise)."""
    w = _lognormal_weights(n, sigma, rng)
    for _ in range(8):
        w = np.minimum(w, cap / n)
        w /= w.sum()
    return w


def _spread(total: int, n: int, base: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """n counts, each >= base, summing to total, the surplus split multinomially by weights."""
    return base + rng.multinomial(total - base * n, weights)


class _PrefixSampler:
    """Draws entries from a prefix [0, n) of a weight vector, with probability proportional to weight.

    Inverse CDF with a guide table (Chen & Asau): the total weight is cut into 4 cells per entry and
    each cell remembers the entry it starts in, so most draws cost one lookup; only draws landing in
    a cell that holds an entry boundary need a binary search (numpy's searchsorted on random keys
    costs ~130 ns per key, which dominated the scale-1 run time).
    """

    def __init__(self, weights: np.ndarray):
        self.cum = np.cumsum(weights)
        total = float(self.cum[-1])
        self.cells = 4 * len(weights)
        self.per_weight = self.cells / total if total > 0 else 0.0
        # guide[c] = first entry whose cumulative weight reaches the start of cell c, counted by
        # bincount (O(n)) rather than searched for.
        upper_cell = np.minimum((self.cum * self.per_weight).astype(np.int64), self.cells + 1)
        self.guide = np.concatenate([[0], np.cumsum(np.bincount(upper_cell, minlength=self.cells + 2))])

    def draw(self, n_prefix: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """k draws for each row, row i from entries [0, n_prefix[i]) (n_prefix >= 1).

        A row whose prefix has no weight at all (possible only at the very start of the timeline)
        draws uniformly from its prefix instead.
        """
        total = self.cum[n_prefix - 1]
        r = rng.random((len(n_prefix), k)) * total[:, None]
        cell = np.minimum((r * self.per_weight).astype(np.int64), self.cells - 1)
        idx = self.guide[cell]
        unsure = idx != self.guide[cell + 1]
        idx[unsure] = np.searchsorted(self.cum, r[unsure], side="right")
        idx = np.minimum(idx, (n_prefix - 1)[:, None])
        empty = total <= 0
        if empty.any():
            idx[empty] = (rng.random((int(empty.sum()), k)) * n_prefix[empty, None]).astype(np.int64)
        return idx


def _gumbel_choice(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Column index per row drawn from softmax(logits), by the Gumbel-max trick."""
    gumbel = -np.log(-np.log(rng.random(logits.shape, dtype=np.float32) + np.float32(1e-12)))
    return np.argmax(logits + gumbel, axis=1)


class _YelpWorld:
    """The latent state of the Yelp-like world: who and what exists when, and their vectors."""

    def __init__(self, n_users: int, n_items: int, n_inter: int, rng: np.random.Generator):
        centres = _unit(rng.standard_normal((_Y_CLUSTERS, _Y_DIM)))
        noise = 1.0 / np.sqrt(_Y_DIM)  # so a noise vector has norm ~1

        # Items: sorted by arrival, so "open by time t" is a prefix (minus the closed ones).
        self.item_arrival = np.sort(_sample_density(_y_item_arrival, n_items, rng))
        self.item_arrival[0] = 0.0  # something to review from day one
        self.item_close = self.item_arrival + _Y_ITEM_LIFE_MIN + rng.exponential(_Y_ITEM_LIFE_MEAN, n_items)
        # The years over which an item collects its first 20 reviews (then only by popularity).
        self.item_horizon = rng.uniform(*_Y_ITEM_HORIZON, n_items)
        cluster = rng.integers(0, _Y_CLUSTERS, n_items)
        self.item_vec = _unit(centres[cluster] + _Y_NOISE * noise * rng.standard_normal((n_items, _Y_DIM)))
        self.item_vec = self.item_vec.astype(np.float32)
        self.log_pop = rng.normal(0.0, _Y_POP_SIGMA, n_items)
        self.pop_trend = rng.normal(0.0, _Y_POP_TREND, n_items)

        # Users: sorted by arrival; active over [start, end] with a heavy-tailed target activity.
        self.user_start = np.sort(_sample_density(_y_user_arrival, n_users, rng))
        self.user_start[0] = 0.0
        span = _Y_USER_SPAN_MIN + rng.exponential(_Y_USER_SPAN_MEAN, n_users)
        self.user_end = np.minimum(1.0, self.user_start + span)
        # Target activity: 10 plus a heavy-tailed rate times the length of the active span (in
        # activity mass), so users cut short by the end of the data write less, not faster.
        extra = _lognormal_weights(n_users, _Y_USER_SIGMA, rng) * _exp_mass(self.user_start, self.user_end)
        extra *= max(n_inter - _Y_MIN_USER * n_users, 0) / extra.sum()
        self.user_target = _Y_MIN_USER + extra
        # Interactions per unit of activity density: who gets picked as a reviewer at time t.
        self.user_rate = self.user_target / _exp_mass(self.user_start, self.user_end)
        a, b = rng.integers(0, _Y_CLUSTERS, (2, n_users))
        base = centres[a] + 0.5 * centres[b] + _Y_NOISE * noise * rng.standard_normal((n_users, _Y_DIM))
        taste = _unit(base)
        drift = _Y_DRIFT * _unit(rng.standard_normal((n_users, _Y_DIM)))
        # Taste at age a (decades since arrival) is unit(taste + a * drift). Kept side by side so
        # one gather serves both, with taste . drift precomputed for the norm.
        self.taste_drift = np.stack([taste, drift], axis=1).astype(np.float32)  # (users, 2, dim)
        self.taste_dot_drift = np.einsum("ud,ud->u", taste, drift).astype(np.float32)

    def taste_at(self, users: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Unit taste vectors of ``users`` (1-d) at times ``t``: shape (len(users), dim)."""
        age = (t - self.user_start[users]).astype(np.float32)[:, None]
        td = self.taste_drift[users]
        return _unit(td[:, 0] + age * td[:, 1])

    def affinity(self, users: np.ndarray, t: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
        """taste(user, t) . item for candidate users (n, k) at times t (n,) and items (n, dim)."""
        proj = np.einsum("nkjd,nd->nkj", self.taste_drift[users], item_vecs)
        age = (t[:, None] - self.user_start[users]).astype(np.float32)
        norm2 = 1.0 + 2.0 * age * self.taste_dot_drift[users] + (_Y_DRIFT * age) ** 2
        return (proj[..., 0] + age * proj[..., 1]) / np.sqrt(norm2)

    def item_weights(self, x: float, lo: float) -> np.ndarray:
        """Popularity of every item at time x; zero for items closed before the block start lo."""
        w = np.exp(self.log_pop + self.pop_trend * (x - self.item_arrival))
        return w * (self.item_close > lo)

    def user_weights(self, lo: float) -> np.ndarray:
        return self.user_rate * (self.user_end >= lo)


def _by_block(t: np.ndarray):
    """Yield (block lo, block mid, indices of t in that block) over the monthly blocks."""
    order = np.argsort(t, kind="stable")
    edges = np.searchsorted(t[order], np.arange(_Y_BLOCKS + 1) / _Y_BLOCKS, side="left")
    edges[-1] = len(t)
    for b in range(_Y_BLOCKS):
        if edges[b] < edges[b + 1]:
            yield b / _Y_BLOCKS, (b + 0.5) / _Y_BLOCKS, order[edges[b] : edges[b + 1]]


def _pick_users(world: _YelpWorld, t: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A reviewer for each (time, item): candidates by activity among active users, then taste."""
    out = np.empty(len(t), dtype=np.int64)
    for lo, _, idx in _by_block(t):
        sampler = _PrefixSampler(world.user_weights(lo))
        for sl in _chunks(idx):
            n_started = np.searchsorted(world.user_start, t[sl], side="right")
            cand = sampler.draw(n_started, _Y_CANDIDATES, rng)
            logits = _Y_BETA * world.affinity(cand, t[sl], world.item_vec[items[sl]])
            out[sl] = cand[np.arange(len(cand)), _gumbel_choice(logits, rng)]
    return out


def _pick_items(world: _YelpWorld, t: np.ndarray, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An item for each (time, user): candidates by popularity among open items, then taste."""
    out = np.empty(len(t), dtype=np.int64)
    for lo, mid, idx in _by_block(t):
        sampler = _PrefixSampler(world.item_weights(mid, lo))
        for sl in _chunks(idx):
            n_open = np.searchsorted(world.item_arrival, t[sl], side="right")
            cand = sampler.draw(n_open, _Y_CANDIDATES, rng)
            taste = world.taste_at(users[sl], t[sl])
            logits = _Y_BETA * np.einsum("nkd,nd->nk", world.item_vec[cand], taste)
            out[sl] = cand[np.arange(len(cand)), _gumbel_choice(logits, rng)]
    return out


def _chunks(idx: np.ndarray, size: int = 16_384):
    # Bounded memory: a chunk holds size x candidates x dim floats at a time.
    for s in range(0, len(idx), size):
        yield idx[s : s + size]


def _redraw_repeats(
    users: np.ndarray, items: np.ndarray, n_items: int, start: int, redraw: Callable[[np.ndarray], None]
) -> None:
    """Re-draw, in place, entries at positions >= start whose (user, item) pair occurred before.

    ``redraw(positions)`` replaces one side of the pairs at those positions. People review a
    business once; a few rounds clear the repeats except at tiny scales, where a heavy user may have
    exhausted their corner of the catalogue (what is left then stays).
    """
    key = users * n_items + items
    taken, first = np.unique(key, return_index=True)  # sorted set of the pairs present
    repeat = np.ones(len(key), dtype=bool)
    repeat[first] = False
    repeat[:start] = False
    pos = np.flatnonzero(repeat)
    added = np.empty(0, dtype=np.int64)  # pairs created by re-draws (small, kept sorted)
    for _ in range(_Y_REDRAW_ROUNDS):
        if not len(pos):
            return
        redraw(pos)
        new = users[pos] * n_items + items[pos]
        bad = _contains(taken, new) | _contains(added, new)
        _, first_new = np.unique(new, return_index=True)
        twice = np.ones(len(new), dtype=bool)
        twice[first_new] = False
        bad |= twice
        added = np.sort(np.concatenate([added, new[~bad]]))
        pos = pos[bad]


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def generate_yelp_like(scale: float = YELP_DEFAULT_SCALE, seed: int = 0) -> RawStream:
    """A Yelp-like review stream (see the module docstring), time-ordered, with opaque int ids."""
    n_inter, n_users, n_items = _sizes(YELP_FULL, scale, (60, 3, 3))
    rng = _rng(seed, 1)
    world = _YelpWorld(n_users, n_items, n_inter, rng)

    # Phase 1: each item's first 20 interactions, spread over its horizon; items pick reviewers.
    p1_items = np.repeat(np.arange(n_items), _Y_MIN_ITEM)
    hi = np.minimum(1.0, world.item_close)[p1_items]
    hi = np.minimum(hi, (world.item_arrival + world.item_horizon)[p1_items])
    p1_times = _exp_time(world.item_arrival[p1_items], hi, rng.random(len(p1_items)))
    p1_users = _pick_users(world, p1_times, p1_items, rng)

    def new_reviewer(pos: np.ndarray) -> None:
        p1_users[pos] = _pick_users(world, p1_times[pos], p1_items[pos], rng)

    _redraw_repeats(p1_users, p1_items, n_items, 0, new_reviewer)

    # Phase 2: top every user up to 10, share the rest by how far each is below its target.
    got = np.bincount(p1_users, minlength=n_users)
    top_up = np.maximum(0, _Y_MIN_USER - got)
    rest = max(0, n_inter - len(p1_items) - int(top_up.sum()))
    short = np.maximum(world.user_target - got - top_up, 0.0) + 1e-9
    p2_counts = top_up + rng.multinomial(rest, short / short.sum())
    p2_users = np.repeat(np.arange(n_users), p2_counts)
    p2_times = _exp_time(world.user_start[p2_users], world.user_end[p2_users], rng.random(len(p2_users)))
    p2_items = _pick_items(world, p2_times, p2_users, rng)

    users = np.concatenate([p1_users, p2_users])
    items = np.concatenate([p1_items, p2_items])
    x = np.concatenate([p1_times, p2_times])

    def new_item(pos: np.ndarray) -> None:  # phase 1 stays fixed: it holds the 20-per-item floor
        items[pos] = _pick_items(world, x[pos], users[pos], rng)

    _redraw_repeats(users, items, n_items, len(p1_items), new_item)
    times = YELP_START + np.minimum(np.floor(x * (YELP_END - YELP_START)), YELP_END - YELP_START - 1)
    return _finish(users, items, times.astype(np.int64), n_users, n_items, rng)


def _finish(
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    n_users: int,
    n_items: int,
    rng: np.random.Generator,
) -> RawStream:
    """Time-order the stream and give users and items opaque raw ids (random permutations)."""
    order = np.argsort(times, kind="stable")
    user_ids = rng.permutation(n_users).astype(np.int64)
    item_ids = rng.permutation(n_items).astype(np.int64)
    return RawStream(
        users=user_ids[users[order]],
        items=item_ids[items[order]],
        times=np.ascontiguousarray(times[order], dtype=np.int64),
    )


def _rhythm(table: np.ndarray, seconds_of_day: np.ndarray) -> np.ndarray:
    return np.interp(seconds_of_day / 3600.0, np.arange(25), table)


def generate_adressa_like(scale: float = ADRESSA_DEFAULT_SCALE, seed: int = 0) -> RawStream:
    """An Adressa-like news click stream (see the module docstring)."""
    n_inter, n_users, n_items = _sizes(ADRESSA_FULL, scale, (40, 5, 3))
    n_inter = max(n_inter, n_users, n_items)
    rng = _rng(seed, 2)
    window = ADRESSA_DAYS * 86_400

    # Articles: publication day uniform, hour of day by the publishing rhythm.
    hour_p = _A_PUBLISH_RHYTHM[:24] + _A_PUBLISH_RHYTHM[1:]
    pub_hour = rng.choice(24, size=n_items, p=hour_p / hour_p.sum()) + rng.random(n_items)
    pub = rng.integers(0, ADRESSA_DAYS, n_items) * 86_400 + pub_hour * 3600
    # Hits are capped (25x the mean, and a tenth of all users so that at small scales a hit does
    # not need the same readers many times over).
    max_clicks = min(_A_ITEM_CAP * n_inter / n_items, n_users / 10)
    cap = max(2.0, (max_clicks - 1) * n_items / max(n_inter - n_items, 1))
    clicks = _spread(n_inter, n_items, 1, _capped_weights(n_items, _A_ITEM_SIGMA, cap, rng), rng)
    tau = 3600 * _A_TAU_MEDIAN_H * np.exp(_A_TAU_SIGMA * rng.standard_normal(n_items))
    main_topic, second_topic = rng.integers(0, _A_TOPICS, (2, n_items))

    # Click times: burst-and-decay after publication, thinned by the daily reading rhythm.
    slot_item = np.repeat(np.arange(n_items), clicks)
    t = np.empty(n_inter)
    todo = np.arange(n_inter)
    peak = _A_CLICK_RHYTHM.max()
    for _ in range(_A_MAX_ROUNDS):
        it = slot_item[todo]
        cand = pub[it] + tau[it] * rng.exponential(size=len(todo))
        keep = (cand < window) & (rng.random(len(todo)) * peak < _rhythm(_A_CLICK_RHYTHM, cand % 86_400))
        t[todo[keep]] = cand[keep]
        todo = todo[~keep]
        if not len(todo):
            break
    if len(todo):  # articles published minutes before the window ends, in the dead of night
        it = slot_item[todo]
        t[todo] = pub[it] + rng.random(len(todo)) * (window - pub[it])

    # Each click slot's topic: the article's main topic mostly, its second topic otherwise.
    is_main = rng.random(n_inter) < _A_MAIN_TOPIC_SHARE
    slot_topic = np.where(is_main, main_topic[slot_item], second_topic[slot_item])

    # Users: heavy-tailed activity, Dirichlet topic tastes around the overall topic mix.
    # The heaviest readers are capped (60x the mean, and a third of all articles so that small
    # scales do not force a heavy reader to reread).
    max_clicks = min(_A_USER_CAP * n_inter / n_users, n_items / 3)
    cap = max(2.0, (max_clicks - 1) * n_users / max(n_inter - n_users, 1))
    activity = _spread(n_inter, n_users, 1, _capped_weights(n_users, _A_USER_SIGMA, cap, rng), rng)
    topic_mix = np.bincount(slot_topic, minlength=_A_TOPICS) + 1.0
    alpha = _A_TOPIC_CONCENTRATION * topic_mix / topic_mix.sum()
    prefs = rng.dirichlet(alpha, size=n_users)
    prefs /= prefs.sum(axis=1, keepdims=True)
    per_topic = rng.multinomial(activity, prefs)  # (users, topics) click counts wanted
    u_user = np.repeat(np.repeat(np.arange(n_users), _A_TOPICS), per_topic.ravel())
    u_topic = np.repeat(np.tile(np.arange(_A_TOPICS), n_users), per_topic.ravel())

    # Balance supply and demand per topic: surplus user slots (random ones) move to topics short
    # of readers; with users' tastes centred on the article mix this moves only a few percent.
    u_topic = _rebalance(u_topic, np.bincount(slot_topic, minlength=_A_TOPICS), rng)

    # Match within each topic at random: user slot k of topic z reads article slot k of topic z.
    u_order = _shuffled_by(u_topic, rng)
    i_order = _shuffled_by(slot_topic, rng)
    users = np.empty(n_inter, dtype=np.int64)
    users[i_order] = u_user[u_order]
    _swap_repeats(users, slot_item, slot_topic, rng)

    times = ADRESSA_START + np.minimum(np.floor(t), window - 1).astype(np.int64)
    return _finish(users, slot_item, times, n_users, n_items, rng)


def _swap_repeats(users: np.ndarray, items: np.ndarray, topic: np.ndarray, rng: np.random.Generator) -> None:
    """Trade readers between click slots of the same topic until few (user, article) pairs repeat.

    A swap keeps every user's and every article's click count and, in the first rounds, every
    slot's topic; the later rounds trade with any slot (a heavy reader who has read every article
    of their topics reads something else), which matters only at small scales.
    """
    n_items = int(items.max()) + 1
    order = np.argsort(topic.astype(np.uint8), kind="stable")
    start = np.searchsorted(topic[order], np.arange(_A_TOPICS + 1))
    for round_ in range(_A_SWAP_ROUNDS):
        repeat = _repeat_mask(users * n_items + items)
        pos = np.flatnonzero(repeat)
        if not len(pos):
            return
        if round_ < _A_SWAP_ROUNDS // 2:
            z = topic[pos]
            partner = order[start[z] + (rng.random(len(pos)) * (start[z + 1] - start[z])).astype(np.int64)]
        else:
            partner = rng.integers(0, len(users), len(pos))
        # Only disjoint swaps: a partner that is itself a repeat, or taken twice, waits a round.
        _, once = np.unique(partner, return_index=True)
        ok = np.zeros(len(pos), dtype=bool)
        ok[once] = True
        ok &= ~repeat[partner]
        a, b = pos[ok], partner[ok]
        users[a], users[b] = users[b], users[a]


def _shuffled_by(topic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions grouped by topic, in random order within each topic."""
    perm = rng.permutation(len(topic))
    # Stable sort of a small-int key is a radix sort in numpy: much faster than lexsort.
    return perm[np.argsort(topic[perm].astype(np.uint8), kind="stable")]


def _repeat_mask(key: np.ndarray) -> np.ndarray:
    """True for all but one entry of each group of equal keys (which one is arbitrary)."""
    order = np.argsort(key)
    sorted_key = key[order]
    mask = np.empty(len(key), dtype=bool)
    mask[order] = np.concatenate([[False], sorted_key[1:] == sorted_key[:-1]])
    return mask


def _rebalance(topic: np.ndarray, need: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reassign entries of ``topic`` so that topic z occurs exactly need[z] times (sum must match)."""
    n_topics = len(need)
    order = _shuffled_by(topic, rng)
    sorted_topic = topic[order]
    start = np.searchsorted(sorted_topic, np.arange(n_topics), side="left")
    rank = np.arange(len(topic)) - start[sorted_topic]
    surplus = order[rank >= need[sorted_topic]]
    have = np.bincount(topic, minlength=n_topics)
    deficit = np.maximum(need - have, 0)
    out = topic.copy()
    out[surplus] = rng.permutation(np.repeat(np.arange(n_topics), deficit))
    return out
