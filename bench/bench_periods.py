"""Seconds per period of each method across a replay, in one run (paper Table 2 on this machine).

    .venv/bin/python bench/bench_periods.py [--dataset synthetic-yelp] [--scale S] \
        [--data FILE] [--methods sml,full,fine,sml-s] [--threads 2] [--full-epochs N] [--json out.json]
        [--scenario scenarios/NAME.toml] [--device cpu|cuda]

Replays the stream with the engine (no store), records each method's retraining seconds, evaluation
seconds and peak RSS per period, and prints:
* a per-period table (retrain seconds per method),
* the paper's Table 2 layout: seconds per retraining at the first, middle and last steps, the
  SML/Full-retrain ratio measured in the same run, and the first period where SML is cheaper;
* SML's transfer throughput during training: the multiply-adds of every row that went through the
  transfer, counted in forward-pass equivalents (1 for the whole-table forward of each period, 2
  for a step-1 row: forward + activation gradients, as ``autograd.grad`` w.r.t. W_hat skips
  Theta's; 3 for a step-2 row: forward + activation and weight gradients), x2 flop per MAC, over
  SML's retraining seconds; next to a plain float32 matrix product measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from sml_sim.config import load_scenario
from sml_sim.data import DatasetSpec, load_dataset
from sml_sim.engine import MethodResult, MethodSpec, ReplayEngine
from sml_sim.retrainers import scenario_params


def matmul_gflops(threads: int, n: int = 2048, k: int = 512, m: int = 512, seconds: float = 2.0,
                  device: str | torch.device = "cpu") -> float:
    """A plain float32 matrix product's GFLOP/s on ``device`` (on a GPU: 8192 x 8192 x 8192, no TF32,
    like the transfer's own products)."""
    device = torch.device(device)
    if device.type == "cuda":
        n = k = m = 8192
    a, b = torch.randn(n, k, device=device), torch.randn(k, m, device=device)
    torch.mm(a, b)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
        sync()
    return 2 * n * k * m * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic-yelp")
    ap.add_argument("--scale", type=float, default=None)
    ap.add_argument("--data", default=None, help="the data file of a real dataset (e.g. ml-100k's u.data)")
    ap.add_argument("--methods", default="sml,full,fine,sml-s")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-epochs", type=int, default=None, help="override Full-retrain's epochs")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--scenario", default=None,
                    help="take the methods' and pre-training's settings from this scenario file "
                         "(default: each method's built-in defaults)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ds = load_dataset(DatasetSpec(args.dataset, data=args.data, scale=args.scale, seed=args.seed))
    scenario = load_scenario(Path(args.scenario)) if args.scenario else None
    sections = scenario.method_params if scenario else {}
    params = {m: scenario_params(m, sections) for m in args.methods.split(",")}
    if args.full_epochs:
        params.setdefault("full", {})["epochs"] = args.full_epochs
    methods = [MethodSpec(m, params.get(m, {})) for m in args.methods.split(",")]
    engine = ReplayEngine(ds, methods, seed=args.seed, device=args.device,
                          pretrain=scenario.pretrain if scenario else None)
    rows: dict[int, dict[str, dict]] = {}

    def on_event(e) -> None:
        if isinstance(e, MethodResult):
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.setdefault(e.period - 1, {})[e.method] = {
                "retrain_s": e.retrain_s, "eval_s": e.eval_s, "recall@20": e.metrics.get("recall@20"),
                "row_passes": e.extra.get("transfer_row_passes"), "macs": e.extra.get("transfer_macs_per_row"),
                "peak_rss_mb": rss, "n_train": len(ds.period(e.period - 1)),
            }
            print(f"period {e.period - 1:>3} {e.method:<8} retrain {e.retrain_s:8.2f}s  eval {e.eval_s:6.2f}s  "
                  f"peak RSS {rss:7.0f} MB", flush=True)

    engine.subscribe(on_event)
    t0 = time.perf_counter()
    engine.prepare()
    print(f"# {ds.source}: {len(ds.users):,} interactions, {ds.n_users:,} users, {ds.n_items:,} items; "
          f"pre-training {time.perf_counter() - t0:.1f}s", flush=True)
    engine.run()

    names = [m.name for m in methods]
    periods = sorted(rows)
    print("\n| period | interactions | " + " | ".join(f"{m} s" for m in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for t in periods:
        print(f"| {t} | {rows[t][names[0]]['n_train']:,} | "
              + " | ".join(f"{rows[t][m]['retrain_s']:.2f}" if m in rows[t] else "-" for m in names) + " |")

    picks = {"first": periods[0], "middle": periods[len(periods) // 2], "last": periods[-1]}
    print("\n| method | " + " | ".join(f"{k} (t={v})" for k, v in picks.items()) + " |")
    print("|---|---|---|---|")
    for m in names:
        print(f"| {m} | " + " | ".join(f"{rows[t][m]['retrain_s']:.2f}" for t in picks.values()) + " |")
    if "sml" in names and "full" in names:
        last = picks["last"]
        ratio = rows[last]["full"]["retrain_s"] / rows[last]["sml"]["retrain_s"]
        cheaper = next((t for t in periods if rows[t]["sml"]["retrain_s"] < rows[t]["full"]["retrain_s"]), None)
        print(f"\nFull-retrain / SML seconds at the last period: {ratio:.2f}x (paper, 1080Ti: ~18x)")
        print(f"first period where SML is cheaper than Full-retrain: {cheaper}")
        flat = rows[last]["sml"]["retrain_s"] / rows[picks['first']]["sml"]["retrain_s"]
        print(f"SML last/first retraining seconds: {flat:.2f}")
        macs = rows[last]["sml"]["macs"]
        row_passes = sum(rows[t]["sml"]["row_passes"] for t in periods)
        sml_s = sum(rows[t]["sml"]["retrain_s"] for t in periods)
        achieved = row_passes * macs * 2 / sml_s / 1e9
        mm = matmul_gflops(args.threads, device=args.device)
        print(f"SML transfer training throughput: {achieved:.1f} GFLOP/s; plain matmul: {mm:.1f} GFLOP/s "
              f"({achieved / mm:.0%})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"source": ds.source, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
