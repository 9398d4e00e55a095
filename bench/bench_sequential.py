"""Seconds per period of the sequential baselines (GRU4Rec, Caser) on a synthetic stream.

    .venv/bin/python bench/bench_sequential.py [--protocol synthetic-yelp] [--scale S] [--threads 2]
                                               [--methods gru4rec,caser] [--periods N] [--device cpu]

Replays the stream through :class:`sml_sim.engine.ReplayEngine` with each method's default
hyperparameters (one engine per method, so the timings do not interleave) and prints a markdown
table: retraining seconds per period (mean, first and last retrained period: GRU4Rec retrains on
all history, so its cost grows; Caser fine-tunes on one period), evaluation seconds per period,
the one-off pre-training in ``start`` (not part of any period), and mean Recall@20 over the
evaluated periods as a sanity check (not a result: all splits mixed). ``--periods N`` stops after
N retrained periods.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sml_sim.data.protocols import DatasetSpec, load_dataset  # noqa: E402
from sml_sim.engine import MethodResult, MethodSpec, ReplayEngine  # noqa: E402


def bench(ds, method: str, device: str, n_periods: int | None) -> dict:
    eng = ReplayEngine(ds, [MethodSpec(method)], seed=0, device=device)
    results: list[MethodResult] = []
    eng.subscribe(lambda ev: results.append(ev) if isinstance(ev, MethodResult) else None)
    t0 = time.perf_counter()
    eng.prepare()
    prepare_s = time.perf_counter() - t0
    until = None if n_periods is None else ds.split.retrain_start + n_periods - 1
    t0 = time.perf_counter()
    eng.run(until)
    run_s = time.perf_counter() - t0
    failed = [r for r in results if r.status != "ok"]
    if failed:
        raise SystemExit(f"{method} failed at period {failed[0].period}: {failed[0].error}")
    retrain = np.array([r.retrain_s for r in results])
    return {
        "method": method, "periods": len(results), "retrain_mean": retrain.mean(),
        "retrain_first": retrain[0], "retrain_last": retrain[-1],
        "eval_mean": np.mean([r.eval_s for r in results]), "pretrain": prepare_s,
        "total": prepare_s + run_s, "recall20": np.mean([r.metrics["recall@20"] for r in results]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", default="synthetic-yelp")
    ap.add_argument("--scale", type=float, default=None, help="default: the protocol's default scale")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="gru4rec,caser")
    ap.add_argument("--periods", type=int, default=None, help="retrained periods to time (default: all)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    ds = load_dataset(DatasetSpec(protocol=args.protocol, scale=args.scale))
    rows = [bench(ds, m, args.device, args.periods) for m in args.methods.split(",")]
    s = ds.summary()
    print(f"{s['source']}: {s['interactions']:,} interactions, {s['users']:,} users, {s['items']:,} items, "
          f"{ds.n_periods} periods (retraining from {ds.split.retrain_start}); device {args.device}, "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| method | periods | retrain s/period (mean) | first | last | eval s/period | pre-train s "
          "| total s | R@20 (all periods) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['periods']} | {r['retrain_mean']:.2f} | {r['retrain_first']:.2f} "
              f"| {r['retrain_last']:.2f} | {r['eval_mean']:.2f} | {r['pretrain']:.1f} | {r['total']:.1f} "
              f"| {r['recall20']:.3f} |")


if __name__ == "__main__":
    main()
