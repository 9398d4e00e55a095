"""The transfer's conv layers alone: the fused CPU kernel against the ATen ops it replaces.

    .venv/bin/python bench/bench_fused_conv.py [--rows 250,500,2000] [--threads 2] [--rounds 15]

For each batch size: the default network's two conv layers (3 -> 10 -> 5 channels at d = 64, GELU
after each) on a stacked [3, rows, 64] input, forward alone and forward + backward (the gradients
of the input and of the filters, as in step 2 of SML), on the kernel and on the ATen ops of
CNNTransfer's fallback path. Rounds alternate between the two so that the machine's drift hits both
alike; prints the median milliseconds per call and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sml_sim.models import fused  # noqa: E402
from sml_sim.models.transfer import CNNTransfer, conv_layers_aten  # noqa: E402


def per_call_ms(fn, calls: int = 20) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e3


def calls(h0: torch.Tensor, weights, grad: torch.Tensor) -> dict:
    plain = [w.detach() for w in weights]
    return {
        "kernel fwd": lambda: fused.fused_conv(h0.detach(), plain),
        "aten fwd": lambda: conv_layers_aten(h0.detach(), plain),
        "kernel both": lambda: torch.autograd.backward(fused.fused_conv(h0, weights), grad),
        "aten both": lambda: torch.autograd.backward(conv_layers_aten(h0, weights), grad),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="250,500,2000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if fused.kernel() is None:
        sys.exit(f"no fused kernel here: {fused.status()}")
    torch.manual_seed(0)
    weights = [w.detach().clone().requires_grad_() for w in CNNTransfer(64).conv]
    print(f"threads {args.threads}; median ms per call over {args.rounds} alternating rounds\n")
    print("| rows | forward: kernel | ATen | ATen / kernel | forward + backward: kernel | ATen | ATen / kernel |")
    print("|---|---|---|---|---|---|---|")
    for rows in (int(r) for r in args.rows.split(",")):
        runs = calls(torch.randn(3, rows, 64).requires_grad_(), weights, torch.randn(rows, 5 * 64))
        for fn in runs.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.rounds):
            for key, fn in runs.items():
                times[key].append(per_call_ms(fn))
        m = {k: statistics.median(v) for k, v in times.items()}
        print(f"| {rows} | {m['kernel fwd']:.3f} | {m['aten fwd']:.3f} | {m['aten fwd'] / m['kernel fwd']:.2f}x "
              f"| {m['kernel both']:.3f} | {m['aten both']:.3f} | {m['aten both'] / m['kernel both']:.2f}x |")


if __name__ == "__main__":
    main()
