"""Seconds of one late retraining per method at a large scale (paper Table 2 for one period).

    .venv/bin/python bench/bench_late_period.py [--scale 1.0] [--period 38] [--methods full,sml,fine,sml-s]
        [--threads 2] [--device cpu]

A full replay at scale 1.0 takes hours on 2 cores, but the cost of one retraining does not depend on
what the model learned before, only on the data it trains on. So this script pre-trains the shared
initial MF briefly (1 epoch), then for each method runs the retraining of period P (Full-retrain on
D_0..D_P, Fine-tune and SPMF on D_P, SML's Algorithm 1 on D_P with D_P+1 or, for a validation or test
period, Algorithm 2 after an untimed last training period to give it a W_hat) and times it, then times the
evaluation of period P+1 once with the last method. It also reports peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from sml_sim.data import DatasetSpec, load_dataset
from sml_sim.evaluation import build_cases, rank_cases
from sml_sim.retrainers import make_retrainer
from sml_sim.retrainers.base import ReplayContext
from sml_sim.retrainers.mf_methods import pretrain_mf


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic-yelp")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--period", type=int, default=38)
    ap.add_argument("--methods", default="full,sml,fine,sml-s")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    ds = load_dataset(DatasetSpec(args.dataset, scale=args.scale))
    print(f"# {ds.source}: {len(ds.users):,} interactions, {ds.n_users:,} users, {ds.n_items:,} items "
          f"(generated and cut in {time.perf_counter() - t0:.0f}s); device {device}; threads {args.threads}")
    ctx = ReplayContext(ds, device, seed=0)
    initial = pretrain_mf(ctx, {"epochs": 1})
    t = args.period
    nxt = ds.period(t + 1) if t + 1 <= ds.split.train[1] else None
    rows = []
    last = None
    for name in args.methods.split(","):
        r = make_retrainer(name)
        r.start(ctx, initial)
        if r.kind == "sml" and t > ds.split.train[1]:
            r.fit_period(ds.split.train[1], None)  # untimed: Algorithm 2 needs a previous W_hat
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        r.fit_period(t, nxt if r.uses_next_period else None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rows.append((name, time.perf_counter() - t0, peak_mb()))
        print(f"{name:<8} period {t}: {rows[-1][1]:.1f}s (peak RSS {rows[-1][2]:.0f} MB)", flush=True)
        last = r
    t0 = time.perf_counter()
    cases = build_cases(ds, t + 1, seed=0)
    t_cases = time.perf_counter() - t0
    t0 = time.perf_counter()
    rank_cases(last, cases, device)
    t_rank = time.perf_counter() - t0
    base = dict((n, s) for n, s, _ in rows)
    print(f"\n| method | seconds for period {t} ({len(ds.period(t)):,} new interactions, "
          f"{int(ds.offsets[t + 1]):,} so far) | vs SML | peak RSS MB |")
    print("|---|---|---|---|")
    for name, sec, mb in rows:
        ratio = f"{sec / base['sml']:.2f}x" if "sml" in base else "-"
        print(f"| {name} | {sec:.1f} | {ratio} | {mb:.0f} |")
    print(f"\nevaluation of period {t + 1}: {len(cases):,} cases x {cases.n_universe:,} items: negatives "
          f"{t_cases:.1f}s (once per period), ranking {t_rank:.1f}s per method")


if __name__ == "__main__":
    main()
