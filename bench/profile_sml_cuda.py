"""Is one SML retraining on a GPU limited by the GPU or by the host launching its kernels?

    PYTHONPATH=. python3 bench/profile_sml_cuda.py [--scale 0.25] [--period 24] [--outer-iters 1]

Runs SML's Algorithm 1 for ``--period`` of synthetic-yelp with the yelp scenario's settings once
untimed (warm-up) and once under the torch profiler, then prints the period's wall seconds, the
seconds the GPU spent running kernels (the sum of their device times), the number of kernels
launched per training batch, and the kernels that took the most device time. Kernel time far below
wall time means the GPU waits on the host (Python, autograd and kernel launches), and a bigger GPU
would not help. Needs only torch and numpy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sml_sim.config import load_scenario  # noqa: E402
from sml_sim.data import DatasetSpec, load_dataset  # noqa: E402
from sml_sim.retrainers import make_retrainer, scenario_params  # noqa: E402
from sml_sim.retrainers.base import ReplayContext  # noqa: E402
from sml_sim.retrainers.mf_methods import pretrain_mf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--period", type=int, default=24, help="a training period (Algorithm 1)")
    ap.add_argument("--outer-iters", type=int, default=1)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_sml_cuda.py: no CUDA device here, nothing to profile")
    device = torch.device("cuda")
    ds = load_dataset(DatasetSpec("synthetic-yelp", scale=args.scale))
    ctx = ReplayContext(ds, device, seed=0)
    initial = pretrain_mf(ctx, {"epochs": 1})
    params = scenario_params("sml", load_scenario(ROOT / "scenarios" / "yelp.toml").method_params)
    params["outer_iters"] = args.outer_iters
    t = args.period
    data, nxt = ds.period(t), ds.period(t + 1)
    batches = args.outer_iters * (-(-len(data) // int(params["batch_w_hat"]))
                                  + -(-len(nxt) // int(params["batch_theta"])))

    def one_period():
        r = make_retrainer("sml", params)
        r.start(ctx, initial)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        r.fit_period(t, nxt)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    one_period()  # warm-up
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall = one_period()
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    print(f"# {torch.cuda.get_device_name()}; torch {torch.__version__}; {ds.source}, period {t}: "
          f"{len(data):,} + {len(nxt):,} interactions, {batches} batches ({args.outer_iters} outer iteration(s))")
    print(f"wall {wall:.2f}s (profiled); GPU kernels {kernel_us / 1e6:.2f}s ({kernel_us / 1e6 / wall:.0%} of wall); "
          f"{launches:,} kernel launches, {launches / max(1, batches):.0f} per batch; "
          f"{wall / max(1, batches) * 1e3:.2f} ms per batch")
    print(events.table(sort_by="self_device_time_total", row_limit=args.top, max_name_column_width=60))


if __name__ == "__main__":
    main()
