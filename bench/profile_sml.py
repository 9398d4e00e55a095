"""Where one SML retraining spends its time, by kind of work (torch profiler), with its throughput.

    .venv/bin/python bench/profile_sml.py [--scale 1.0] [--period 24] [--outer-iters 1] [--threads 2]
    .venv/bin/python bench/profile_sml.py --dataset movielens --data ../shared/data/ml-100k/u.data --outer-iters 10

Builds synthetic-yelp at ``--scale`` with the ``yelp`` scenario's SML settings (those of the
scale-1.0 study), or ``--dataset`` (from ``--data``) with ``scenarios/DATASET.toml``'s, or
``--scenario``'s; pre-trains the initial MF for one epoch, runs SML's Algorithm 1 for ``--period``
once untimed (warm-up: allocator, BLAS kernels) and once under the torch profiler,
with the scenario's hyperparameters except ``--outer-iters`` (one outer iteration is enough to
see the split: every iteration does the same work). Self CPU time is grouped into matrix products
(the transfer's conv and FC layers, forward and backward), GELU forward and backward, and the rest
(gathers, unique, losses, optimisers, Python and autograd bookkeeping). Also prints the period's
transfer throughput (as bench_periods.py counts it) next to a plain matrix product measured in
the same process just before and just after the period; then (``--repeat``) times unprofiled
periods alternating with the matrix product and compares the medians, since on a shared virtual
machine the matrix product alone moves by a third between measurements. ``--compare N`` then
alternates N periods on the fused CPU kernel with N on plain ATen ops (SML_SIM_FUSED=0 runs the
whole script on ATen ops).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_periods import matmul_gflops  # noqa: E402

from sml_sim.config import load_scenario  # noqa: E402
from sml_sim.data import DatasetSpec, load_dataset  # noqa: E402
from sml_sim.models import fused  # noqa: E402
from sml_sim.retrainers import make_retrainer  # noqa: E402
from sml_sim.retrainers.base import ReplayContext  # noqa: E402
from sml_sim.retrainers.mf_methods import pretrain_mf  # noqa: E402
from sml_sim.retrainers.sml import SML  # noqa: E402

KINDS = {"aten::mm": "matrix products", "aten::addmm": "matrix products", "aten::bmm": "matrix products",
         "aten::gelu": "GELU forward", "aten::gelu_backward": "GELU backward",
         "_GeluSlope": "GELU forward", "_GeluSlopeBackward": "GELU backward",
         "_FusedConv": "conv layers, fused (forward)", "_FusedConvBackward": "conv layers, fused (backward)"}
ORDER = ("matrix products", "conv layers, fused (forward)", "conv layers, fused (backward)", "GELU forward",
         "GELU backward", "everything else")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="synthetic-yelp", help="synthetic-yelp or movielens (with --data)")
    ap.add_argument("--data", default=None, help="the dataset's file, for real data")
    ap.add_argument("--scale", type=float, default=None, help="synthetic streams; default 1.0")
    ap.add_argument("--scenario", default=None,
                    help="scenario whose SML settings to use (default: yelp.toml for synthetic-yelp, "
                         "else scenarios/DATASET.toml)")
    ap.add_argument("--period", type=int, default=24, help="a training period (Algorithm 1)")
    ap.add_argument("--outer-iters", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an SML setting, e.g. --set batch_theta=512 (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", type=int, default=0, metavar="N",
                    help="then N rounds of one period on the fused kernel and one on plain ATen ops")
    ap.add_argument("--top", type=int, default=12, help="also list the N costliest operators")
    ap.add_argument("--repeat", type=int, default=4,
                    help="then time N unprofiled periods, each followed by a matrix product, and compare medians")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    synthetic = args.dataset.startswith("synthetic")
    scenario = args.scenario or ROOT / "scenarios" / ("yelp.toml" if args.dataset == "synthetic-yelp"
                                                      else f"{args.dataset}.toml")
    params = dict(load_scenario(Path(scenario)).method_params["sml"], outer_iters=args.outer_iters)
    for key, _, value in (kv.partition("=") for kv in args.set):
        if key not in SML.defaults:
            sys.exit(f"--set {key}: not an SML setting ({', '.join(SML.defaults)})")
        params[key] = value
    ds = load_dataset(DatasetSpec(args.dataset, data=args.data,
                                  scale=(args.scale or 1.0) if synthetic else args.scale))
    t = args.period
    if not ds.split.retrain_start <= t < ds.split.train[1]:
        sys.exit(f"--period must be a training period with a next period, "
                 f"{ds.split.retrain_start}..{ds.split.train[1] - 1}")
    ctx = ReplayContext(ds, torch.device("cpu"), seed=0)
    sml = make_retrainer("sml", params)
    sml.start(ctx, pretrain_mf(ctx, {"epochs": 1}))
    print(f"# {ds.source}: period {t} has {len(ds.period(t)):,} interactions, {t + 1} {len(ds.period(t + 1)):,}; "
          f"{args.outer_iters} outer iteration(s); threads {args.threads}; conv layers: {fused.status()}")
    sml.fit_period(t, ds.period(t + 1))  # warm-up
    mm_before = matmul_gflops(args.threads)
    with profile() as prof:
        t0 = time.perf_counter()
        extra = sml.fit_period(t, ds.period(t + 1))
        seconds = time.perf_counter() - t0
    flops = 2 * extra["transfer_row_passes"] * extra["transfer_macs_per_row"]
    by_kind: dict[str, float] = defaultdict(float)
    events = prof.key_averages()
    for ev in events:
        by_kind[KINDS.get(ev.key, "everything else")] += ev.self_cpu_time_total
    total = sum(by_kind.values())
    print("\n| kind of work | self CPU s | share |\n|---|---|---|")
    for kind in ORDER:
        if kind not in by_kind and kind.startswith("conv"):
            continue
        print(f"| {kind} | {by_kind[kind] / 1e6:.2f} | {by_kind[kind] / total:.0%} |")
    print(f"\ncostliest {args.top} operators (self CPU):")
    for ev in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"  {ev.key:<28} {ev.self_cpu_time_total / 1e6:7.2f} s  {ev.count:6d} calls")
    achieved = flops / seconds / 1e9
    mm_after = matmul_gflops(args.threads)
    mm = (mm_before + mm_after) / 2  # this machine's matrix product drifts: measured on both sides
    print(f"\nperiod {t}: {seconds:.2f} s under the profiler; transfer throughput {achieved:.1f} GFLOP/s; "
          f"plain matmul {mm_before:.1f} before and {mm_after:.1f} GFLOP/s after ({achieved / mm:.0%} of their "
          f"mean); matrix products alone {flops / (by_kind['matrix products'] / 1e6) / 1e9:.1f} GFLOP/s of "
          f"their own time")
    if args.repeat:
        rates, mms = [], []
        for _ in range(args.repeat):  # alternate, so that drift in the machine's speed hits both alike
            t0 = time.perf_counter()
            extra = sml.fit_period(t, ds.period(t + 1))
            rates.append(2 * extra["transfer_row_passes"] * extra["transfer_macs_per_row"]
                         / (time.perf_counter() - t0) / 1e9)
            mms.append(matmul_gflops(args.threads))
        achieved, mm = statistics.median(rates), statistics.median(mms)
        print(f"{args.repeat} unprofiled periods alternating with a plain matmul: transfer "
              f"{', '.join(f'{r:.1f}' for r in rates)} GFLOP/s, matmul {', '.join(f'{m:.1f}' for m in mms)}; "
              f"medians {achieved:.1f} / {mm:.1f} = {achieved / mm:.0%}")
    if args.compare:
        compare_paths(sml, ds, t, args)


def compare_paths(sml, ds, t: int, args) -> None:
    """Unprofiled periods on the fused kernel and on plain ATen ops, alternating with each other and
    with the matrix product, so that the machine's drift hits both paths alike."""
    nets = [net for net in sml.theta.values() if hasattr(net, "fused")]
    rates: dict[bool, list[float]] = {True: [], False: []}
    ratios: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.compare):
        for use_kernel in (True, False):
            for net in nets:
                net.fused = use_kernel
            t0 = time.perf_counter()
            extra = sml.fit_period(t, ds.period(t + 1))
            rate = 2 * extra["transfer_row_passes"] * extra["transfer_macs_per_row"] / (time.perf_counter() - t0) / 1e9
            rates[use_kernel].append(rate)
            ratios[use_kernel].append(rate / matmul_gflops(args.threads))
    for use_kernel, label in ((True, "fused kernel"), (False, "ATen ops")):
        print(f"{label:<12}: transfer {', '.join(f'{r:.1f}' for r in rates[use_kernel])} GFLOP/s; each over the "
              f"matmul right after it: {', '.join(f'{r:.0%}' for r in ratios[use_kernel])}; median "
              f"{statistics.median(rates[use_kernel]):.1f} GFLOP/s, {statistics.median(ratios[use_kernel]):.0%}")
    print(f"fused / ATen, median of the paired periods: "
          f"{statistics.median(a / b for a, b in zip(rates[True], rates[False])):.2f}x")


if __name__ == "__main__":
    main()
