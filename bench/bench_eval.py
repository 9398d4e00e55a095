"""Evaluation throughput: one period of N test cases (999 sampled negatives each plus the full
ranking over all items seen), for an MF scorer.

    .venv/bin/python bench/bench_eval.py [--cases 75000] [--items 123000] [--users 59000] [--threads 2]

Issue 3's target: 75k cases (75M sampled scores plus the full ranks) in at most 10 s on 2 CPU cores.
The stream is random (uniform users and items), with the sizes of a late Yelp period at scale 1.0.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sml_sim.data.base import RawStream, Split, build_dataset
from sml_sim.evaluation import build_cases, rank_cases
from sml_sim.models.mf import MF
from sml_sim.retrainers.mf_methods import mf_scores


class MFScorer:
    """Scores as the MF retrainers do (same function, same reusable buffer)."""

    scores_into_buffer = True

    def __init__(self, model):
        self.model = model

    def score(self, cases, rows, n_items, out=None):
        return mf_scores(self.model.P, self.model.Q, cases, rows, n_items, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=75_000)
    ap.add_argument("--items", type=int, default=123_000)
    ap.add_argument("--users", type=int, default=59_000)
    ap.add_argument("--history", type=int, default=2_000_000, help="interactions before the period")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n = args.history + args.cases
    # Every item appears in the history so the universe is the whole table.
    items = np.concatenate([np.arange(args.items), rng.integers(0, args.items, n - args.items)])
    users = np.concatenate([np.arange(args.users), rng.integers(0, args.users, n - args.users)])
    raw = RawStream(users, items, np.arange(n, dtype=np.int64))
    ds = build_dataset(raw, name="bench", source="random", is_synthetic=True, params={}, min_user=1, min_item=1,
                       cut=lambda t: ((np.arange(len(t)) >= args.history).astype(np.int32), None),
                       split_for=lambda p: Split(p, (0, 0), (0, 0), (1, 1), 0))
    t0 = time.perf_counter()
    cases = build_cases(ds, 1, seed=0)
    t_cases = time.perf_counter() - t0
    model = MF(ds.n_users, ds.n_items, 64)
    t0 = time.perf_counter()
    rank_cases(MFScorer(model), cases, torch.device("cpu"))
    t_rank = time.perf_counter() - t0
    m = cases.n_universe
    print("| cases | items | threads | draw negatives s (once per period) | rank s (per method) | sampled+full scores/s |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(cases):,} | {m:,} | {args.threads} | {t_cases:.2f} | {t_rank:.2f} | "
          f"{len(cases) * (m + 1000) / t_rank / 1e6:,.0f}M |")


if __name__ == "__main__":
    main()
