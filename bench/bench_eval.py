"""Evaluation throughput: one period of test cases (999 sampled negatives each plus the full
ranking over all items seen), for an MF scorer.

    .venv/bin/python bench/bench_eval.py [--source synthetic-yelp|random] [--period 38] [--threads 2]

Issue 3's target: 75k cases (75M sampled scores plus the full ranks) in at most 10 s on 2 CPU cores.
``--source synthetic-yelp`` (default) evaluates a late period of the synthetic Yelp stream at scale
1.0 (75k cases, 123k items, ~19k distinct users: ~4 cases per user, as in Yelp). ``--source random``
is the worst case for per-user scoring: uniform users and items of the same sizes (~1.3 cases per
user).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sml_sim.data.base import RawStream, Split, build_dataset
from sml_sim.data.protocols import DatasetSpec, load_dataset
from sml_sim.evaluation import build_cases, rank_cases
from sml_sim.models.mf import MF
from sml_sim.retrainers.mf_methods import mf_scores, mf_user_scores


class PerCaseMFScorer:
    """Scores as the MF retrainers do (same function, same reusable buffer), one row per case: the
    path models whose scores depend on the case's own history take (the "before")."""

    scores_into_buffer = True

    def __init__(self, model):
        self.model = model

    def score(self, cases, rows, n_items, out=None):
        return mf_scores(self.model.P, self.model.Q, cases, rows, n_items, out)


class MFScorer(PerCaseMFScorer):
    """As the MF and SML retrainers score: one row per distinct user of the period."""

    def score_users(self, users, n_items, out=None):
        return mf_user_scores(self.model.P, self.model.Q, users, n_items, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["synthetic-yelp", "random"], default="synthetic-yelp")
    ap.add_argument("--scale", type=float, default=1.0, help="synthetic-yelp's scale")
    ap.add_argument("--period", type=int, default=38, help="synthetic-yelp's evaluated period")
    ap.add_argument("--cases", type=int, default=75_000, help="random source only (also --items/--users/--history)")
    ap.add_argument("--items", type=int, default=123_000)
    ap.add_argument("--users", type=int, default=59_000)
    ap.add_argument("--history", type=int, default=2_000_000, help="interactions before the period")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-case", action="store_true", help="score one row per case, not per distinct user")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.source == "synthetic-yelp":
        ds, period = load_dataset(DatasetSpec("synthetic-yelp", scale=args.scale)), args.period
    else:
        ds, period = random_stream(args), 1
    t0 = time.perf_counter()
    cases = build_cases(ds, period, seed=0)
    t_cases = time.perf_counter() - t0
    model = MF(ds.n_users, ds.n_items, 64)
    t0 = time.perf_counter()
    rank_cases((PerCaseMFScorer if args.per_case else MFScorer)(model), cases, torch.device("cpu"))
    t_rank = time.perf_counter() - t0
    m = cases.n_universe
    print("| source | scoring | cases | distinct users | items | threads | draw negatives s (once per period) "
          "| rank s (per method) | sampled+full scores/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.source} | {'per case' if args.per_case else 'per user'} | {len(cases):,} | {len(cases.local_user_ids):,} | {m:,} | {args.threads} | {t_cases:.2f} "
          f"| {t_rank:.2f} | {len(cases) * (m + 1000) / t_rank / 1e6:,.0f}M |")


def random_stream(args):
    """Uniform users and items with every item in the history, so the universe is the whole table."""
    rng = np.random.default_rng(0)
    n = args.history + args.cases
    items = np.concatenate([np.arange(args.items), rng.integers(0, args.items, n - args.items)])
    users = np.concatenate([np.arange(args.users), rng.integers(0, args.users, n - args.users)])
    raw = RawStream(users, items, np.arange(n, dtype=np.int64))
    return build_dataset(raw, name="bench", source="random", is_synthetic=True, params={}, min_user=1, min_item=1,
                       cut=lambda t: ((np.arange(len(t)) >= args.history).astype(np.int32), None),
                       split_for=lambda p: Split(p, (0, 0), (0, 0), (1, 1), 0))


if __name__ == "__main__":
    main()
