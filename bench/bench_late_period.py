"""Seconds per retraining of each method at chosen periods of a large replay (paper Table 2), in one run.

    .venv/bin/python bench/bench_late_period.py [--scale 1.0] [--periods 10,24,38] \
        [--methods full,sml,fine,sml-s,spmf] [--scenario scenarios/yelp.toml] [--threads 2] [--device cpu]

A full replay at scale 1.0 takes hours on 2 cores, but the cost of one retraining does not depend on
what the model learned before, only on the data it trains on. So this script pre-trains the shared
initial MF briefly (1 epoch), then for each chosen period P and each method runs the retraining of
period P (Full-retrain on D_0..D_P, Fine-tune and SPMF on D_P, SML's Algorithm 1 on D_P with D_P+1 or,
for a validation or test period, Algorithm 2 after an untimed last training period to give it a
W_hat) and times it; then it times the evaluation of period P+1 (negatives once, ranking with the
last method). Hyperparameters are the scenario's (``--scenario``; default: the method defaults).
It reports peak RSS, and SML's transfer throughput in its timed periods (row passes x multiply-adds
per row x 2 over its seconds; see bench_periods.py) next to a plain matrix product in the same process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_periods import matmul_gflops  # noqa: E402

from sml_sim.config import load_scenario  # noqa: E402
from sml_sim.data import DatasetSpec, load_dataset  # noqa: E402
from sml_sim.evaluation import build_cases, rank_cases  # noqa: E402
from sml_sim.retrainers import make_retrainer, scenario_params  # noqa: E402
from sml_sim.retrainers.base import ReplayContext  # noqa: E402
from sml_sim.retrainers.mf_methods import pretrain_mf  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic-yelp")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--periods", default="38", help="comma-separated periods to time, e.g. 10,24,38")
    ap.add_argument("--methods", default="full,sml,fine,sml-s")
    ap.add_argument("--scenario", default=None, help="take each method's hyperparameters from this .toml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    params = load_scenario(Path(args.scenario)).method_params if args.scenario else {}
    t0 = time.perf_counter()
    ds = load_dataset(DatasetSpec(args.dataset, scale=args.scale))
    print(f"# {ds.source}: {len(ds.users):,} interactions, {ds.n_users:,} users, {ds.n_items:,} items "
          f"(generated and cut in {time.perf_counter() - t0:.0f}s); device {device}; threads {args.threads}; "
          f"hyperparameters: {args.scenario or 'method defaults'}", flush=True)
    ctx = ReplayContext(ds, device, seed=0)
    initial = pretrain_mf(ctx, {"epochs": 1})
    periods = [int(p) for p in args.periods.split(",")]
    methods = args.methods.split(",")
    secs: dict[tuple[str, int], float] = {}
    evals: dict[int, tuple[float, float]] = {}
    sml_work = [0.0, 0.0]  # flop, seconds of the timed SML periods
    for t in periods:
        nxt = ds.period(t + 1) if t + 1 <= ds.split.train[1] else None
        last = None
        for name in methods:
            r = make_retrainer(name, scenario_params(name, params))
            r.start(ctx, initial)
            if r.kind == "sml" and t > ds.split.train[1]:
                r.fit_period(ds.split.train[1], None)  # untimed: Algorithm 2 needs a previous W_hat
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            extra = r.fit_period(t, nxt if r.uses_next_period else None) or {}
            if device.type == "cuda":
                torch.cuda.synchronize()
            secs[name, t] = time.perf_counter() - t0
            if name == "sml":
                sml_work[0] += 2 * extra["transfer_row_passes"] * extra["transfer_macs_per_row"]
                sml_work[1] += secs[name, t]
            print(f"{name:<8} period {t}: {secs[name, t]:.1f}s (peak RSS {peak_mb():.0f} MB)", flush=True)
            last = r
        t0 = time.perf_counter()
        cases = build_cases(ds, t + 1, seed=0)
        t_cases = time.perf_counter() - t0
        t0 = time.perf_counter()
        rank_cases(last, cases, device)
        evals[t] = (t_cases, time.perf_counter() - t0)
        print(f"evaluation of period {t + 1}: {len(cases):,} cases x {cases.n_universe:,} items: negatives "
              f"{evals[t][0]:.1f}s, ranking ({methods[-1]}) {evals[t][1]:.1f}s", flush=True)

    print("\n| method | " + " | ".join(f"t={t} ({ds.split.split_of(t)}; {int(ds.offsets[t + 1]):,} so far)"
                                       for t in periods) + " |")
    print("|---|" + "---|" * len(periods))
    for name in methods:
        print(f"| {name} | " + " | ".join(f"{secs[name, t]:.1f}" for t in periods) + " |")
    print("| evaluation: negatives + ranking per method | "
          + " | ".join(f"{evals[t][0]:.1f} + {evals[t][1]:.1f}" for t in periods) + " |")
    if "sml" in methods and "full" in methods:
        last_t = periods[-1]
        print(f"\nFull-retrain / SML at t={last_t}: {secs['full', last_t] / secs['sml', last_t]:.2f}x "
              f"(paper, Yelp on a 1080Ti: ~18x)")
    if "sml" in methods and len(periods) > 1:
        print(f"SML last / first timed period: {secs['sml', periods[-1]] / secs['sml', periods[0]]:.2f}")
    if sml_work[1] > 0:
        achieved = sml_work[0] / sml_work[1] / 1e9
        mm = matmul_gflops(args.threads, device=device)
        print(f"SML transfer throughput in its timed periods: {achieved:.1f} GFLOP/s; plain matmul "
              f"{mm:.1f} GFLOP/s ({achieved / mm:.0%})")
    print(f"peak RSS {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
