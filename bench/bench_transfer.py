"""Throughput of the SML CNN transfer on CPU against a plain matrix product of comparable size.

    .venv/bin/python bench/bench_transfer.py [--rows 3000] [--dim 64] [--threads 2] [--seconds 0.3]
                                             [--rounds 9] [--clock wall|cpu]

Measures, in one process: the transfer's forward (no autograd, as when W_t is produced for a
table), forward+backward (gradients for w_hat and for Theta: SML's step 2 pattern) and forward +
gradient w.r.t. w_hat only (step 1: autograd then skips Theta's gradients) on batches of ``--rows`` rows, and torch.mm with the shape of the transfer's FC layer
([rows, C*d] @ [C*d, fc], float32), which dominates its work. FLOPs are 2 x the multiply-adds of
``transfer_flops_per_row`` (conv and linear layers; GELU, norm and product are not counted), times
3 for forward+backward (forward, input gradient, weight gradient) and 2 for forward + input gradient.

Timings are taken in interleaved rounds; the table shows the best round (least disturbed by other
processes on a shared machine) and the median round. On a busy machine, ``--threads 1 --clock cpu``
measures the thread's CPU time instead of wall time, which other processes disturb much less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sml_sim.models.transfer import CNNTransfer, transfer_flops_per_row  # noqa: E402


def time_rounds(fns: dict[str, Callable[[], object]], seconds: float, rounds: int,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each fn, one entry per round; the fns take turns so that a burst of
    outside load hits all of them alike."""
    reps = {}
    for name, fn in fns.items():
        fn(), fn()  # warm up the allocator and the BLAS kernels
        t0 = clock()
        fn()
        reps[name] = max(1, int(seconds / max(clock() - t0, 1e-9)))
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = clock()
            for _ in range(reps[name]):
                fn()
            out[name].append((clock() - t0) / reps[name])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3000, help="rows per batch (SML step 1: ~1k users + 2k items)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=0.3, help="time per measurement round")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: this thread's CPU time (only with --threads 1, where torch computes in this thread)")
    args = ap.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu needs --threads 1: the CPU time of other threads is not counted")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = CNNTransfer(args.dim)
    w_prev = torch.randn(args.rows, args.dim) * 0.1
    w_hat = (w_prev + 0.05 * torch.randn(args.rows, args.dim)).requires_grad_()
    grad_out = torch.randn(args.rows, args.dim)
    fc_in = net.channels * args.dim
    a, b = torch.randn(args.rows, fc_in), torch.randn(fc_in, net.fc_size)

    def forward():
        with torch.no_grad():
            net(w_prev, w_hat)

    def train_step():
        net.zero_grad(set_to_none=True)
        w_hat.grad = None
        net(w_prev, w_hat).backward(grad_out)

    def w_hat_step():
        torch.autograd.grad(net(w_prev, w_hat), [w_hat], grad_out)

    fns = {"forward": forward, "forward+backward": train_step, "forward+input-grad": w_hat_step,
           "mm": lambda: torch.mm(a, b)}
    load_before = os.getloadavg()[0]
    secs = time_rounds(fns, args.seconds, args.rounds, clock)
    load_after = os.getloadavg()[0]

    macs = transfer_flops_per_row(net) * args.rows
    flops = {"forward": 2 * macs, "forward+backward": 6 * macs, "forward+input-grad": 4 * macs, "mm": 2 * args.rows * fc_in * net.fc_size}
    best = {k: flops[k] / min(v) / 1e9 for k, v in secs.items()}
    median = {k: flops[k] / statistics.median(v) / 1e9 for k, v in secs.items()}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, rows={args.rows}, d={args.dim}, "
          f"{transfer_flops_per_row(net):,} MACs/row, {args.clock} clock, "
          f"load avg {load_before:.2f} -> {load_after:.2f}")
    print()
    print("| work | ms/call (best) | GFLOP/s best | GFLOP/s median | / mm (best) |")
    print("|---|---:|---:|---:|---:|")
    labels = {"forward": "CNN transfer forward (no grad)",
              "forward+backward": "CNN transfer forward+backward (SML step 2: Theta's gradients)",
              "forward+input-grad": "CNN transfer forward+gradient w.r.t. w_hat only (SML step 1)",
              "mm": f"torch.mm [{args.rows}x{fc_in}]@[{fc_in}x{net.fc_size}]"}
    for k in fns:
        print(f"| {labels[k]} | {min(secs[k]) * 1e3:.2f} | {best[k]:.1f} | {median[k]:.1f} | "
              f"{best[k] / best['mm']:.2f} |")
    if args.clock == "wall" and load_before > 0.5 * args.threads:
        print(f"\nwarning: load average {load_before:.2f} at start: other processes share the CPU, "
              "the medians (and perhaps the best rounds) understate this machine")


if __name__ == "__main__":
    main()
