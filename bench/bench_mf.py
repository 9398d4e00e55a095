"""MF training throughput: one epoch of log-loss training over N interactions.

    .venv/bin/python bench/bench_mf.py [--n 1000000] [--threads 2]

Issue 3's target: an MF epoch over 1M interactions in at most 5 s on 2 CPU cores (dim 64, one
negative per positive, tables of the paper's Yelp size: 59k users x 123k items).
"""

from __future__ import annotations

import argparse
import time

import torch

from sml_sim.models.mf import MF, train_mf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=59_000)
    ap.add_argument("--items", type=int, default=123_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    users = torch.randint(0, args.users, (args.n,), generator=g)
    items = torch.randint(0, args.items, (args.n,), generator=g)
    print("| batch | epoch s (1 epoch) | interactions/s |")
    print("|---|---|---|")
    for batch in (256, 1024, 4096):
        model = MF(args.users, args.items, 64, generator=g)
        t0 = time.perf_counter()
        train_mf(model, users, items, n_items_seen=args.items, epochs=1, batch_size=batch, lr=0.01, l2=1e-7,
                 generator=g)
        dt = time.perf_counter() - t0
        print(f"| {batch} | {dt:.2f} | {args.n / dt:,.0f} |")


if __name__ == "__main__":
    main()
