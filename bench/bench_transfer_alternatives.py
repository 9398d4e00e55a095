"""Ways to run the CNN transfer faster on the CPU, each against the shipped eager forward, in one run.

    .venv/bin/python bench/bench_transfer_alternatives.py [--rows 250,511,2030] [--threads 2] [--no-compile]

The transfer spends ~1/5 of a training step in GELU forward and backward, mostly on the conv
layers' small [C, B*d] maps (15 GELU'd values per column against 64 weights per FC output), so
the candidates attack that elementwise work:

* ``recompute``: the conv layers as one autograd Function that saves only its input and recomputes
  the conv maps in cache-sized row chunks during backward (less memory traffic, more arithmetic);
* ``compile``: ``torch.compile`` (inductor, dynamic shapes) of the whole network, which fuses the
  elementwise work into generated C++ loops (needs a C++ compiler; ``--no-compile`` skips it);
* GELU alone: ATen's exact (erf) GELU against its tanh approximation and a compiled GELU.

``recompute`` is first checked to give the same outputs and gradients as the shipped network (in
float64); ``compile`` runs the same graph. Times are per call of SML's two training patterns on a batch of ``--rows`` rows: step 2
(forward, backward to Theta and W_hat) and step 1 (forward, gradient w.r.t. W_hat only), in
interleaved rounds (best round shown), with GFLOP/s counted as bench_transfer.py does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transfer import time_rounds  # noqa: E402

from sml_sim.models.transfer import CNNTransfer  # noqa: E402


class RecomputedConv(torch.autograd.Function):
    """Conv layers + GELU of the CNN transfer, [3, B*d] -> [B, C*d]; backward recomputes in chunks."""

    @staticmethod
    def forward(ctx, h0, rows: int, dim: int, chunk_rows: int, *weights):
        out = h0.new_empty(rows, weights[-1].shape[0] * dim)
        step = chunk_rows * dim
        for lo in range(0, rows * dim, step):
            h = h0[:, lo:lo + step]
            for w in weights:
                h = F.gelu(torch.mm(w, h))
            r = h.shape[1] // dim
            out[lo // dim: lo // dim + r].view(r, -1, dim).copy_(h.view(-1, r, dim).transpose(0, 1))
        ctx.save_for_backward(h0, *weights)
        ctx.rows, ctx.dim, ctx.step = rows, dim, step
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h0, *weights = ctx.saved_tensors
        dim, step = ctx.dim, ctx.step
        need_w = any(ctx.needs_input_grad[4:])
        grad_w = [torch.zeros_like(w) for w in weights] if need_w else [None] * len(weights)
        grad_h0 = torch.empty_like(h0) if ctx.needs_input_grad[0] else None
        for lo in range(0, ctx.rows * dim, step):
            h = h0[:, lo:lo + step]
            r = h.shape[1] // dim
            inputs, pre = [], []
            for w in weights:
                inputs.append(h)
                pre.append(torch.mm(w, h))
                h = F.gelu(pre[-1])
            g = grad_out[lo // dim: lo // dim + r].view(r, -1, dim).transpose(0, 1).reshape(-1, r * dim)
            for k in range(len(weights) - 1, -1, -1):
                g = torch.ops.aten.gelu_backward(g, pre[k])
                if need_w:
                    grad_w[k].addmm_(g, inputs[k].t())
                if k > 0:
                    g = torch.mm(weights[k].t(), g)
                elif grad_h0 is not None:
                    grad_h0[:, lo:lo + step] = torch.mm(weights[0].t(), g)
        return (grad_h0, None, None, None, *grad_w)


def recomputed_forward(net: CNNTransfer, chunk_rows: int):
    def forward(w_prev, w_hat):
        h0 = net.stack(w_prev, w_hat).reshape(3, -1)
        h = RecomputedConv.apply(h0, w_prev.shape[0], net.dim, chunk_rows, *net.conv)
        return net.out(F.gelu(net.fc(h)))
    return forward


def same_gradients(candidate_for, rows: int = 37) -> float:
    """Largest difference of outputs and gradients between a candidate and the shipped network."""
    torch.manual_seed(0)
    net = CNNTransfer(64).double()
    a = torch.randn(rows, 64, dtype=torch.double)
    b = (a + 0.1 * torch.randn(rows, 64, dtype=torch.double)).requires_grad_(True)
    ref, got = net(a, b), candidate_for(net)(a, b)
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, [b, *net.parameters()], g)
    grads_got = torch.autograd.grad(got, [b, *net.parameters()], g)
    return max([(ref - got).abs().max().item()] + [(x - y).abs().max().item() for x, y in zip(grads_ref, grads_got)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="250,511,2030", help="rows per batch (step 2: ~250 users, ~510 items; "
                    "step 1: ~1k users, ~2k items)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-rows", type=int, default=128)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    candidates = {"eager (shipped)": lambda net: net,
                  "recompute": lambda net: recomputed_forward(net, args.chunk_rows)}
    if not args.no_compile:
        candidates["compile"] = lambda net: torch.compile(net, dynamic=True)
    for name in ("recompute",):
        print(f"# {name}: largest difference from the shipped network (float64) {same_gradients(candidates[name]):.1e}")

    torch.manual_seed(0)
    net = CNNTransfer(64)
    flops_per_row = 2 * net.flops_per_row()
    forwards = {name: make(net) for name, make in candidates.items()}
    print(f"\nthreads {args.threads}; best of {args.rounds} interleaved rounds")
    print("| rows | pattern | " + " | ".join(f"{n} ms (GFLOP/s)" for n in forwards) + " |")
    print("|---|---|" + "---|" * len(forwards))
    for rows in (int(r) for r in args.rows.split(",")):
        w_prev = torch.randn(rows, 64) * 0.1
        w_hat = w_prev + 0.01 * torch.randn(rows, 64)

        def step2(fwd, w_prev=w_prev, w_hat=w_hat):
            net.zero_grad(set_to_none=True)
            fwd(w_prev, w_hat).square().mean().backward()

        def step1(fwd, w_prev=w_prev, w_hat=w_hat):
            hat = w_hat.clone().requires_grad_(True)
            torch.autograd.grad(fwd(w_prev, hat).square().mean(), [hat])

        for pattern, fn, passes in (("step 2", step2, 3), ("step 1", step1, 2)):
            times = time_rounds({n: (lambda f=f, fn=fn: fn(f)) for n, f in forwards.items()}, args.seconds, args.rounds)
            cells = [f"{min(ts) * 1e3:.2f} ({passes * rows * flops_per_row / min(ts) / 1e9:.0f})"
                     for ts in times.values()]
            print(f"| {rows} | {pattern} | " + " | ".join(cells) + " |")

    x = torch.randn(10, 511 * 64, requires_grad=True)
    g = torch.randn(10, 511 * 64)
    gelus = {"exact (shipped)": F.gelu, "tanh approximation": lambda v: F.gelu(v, approximate="tanh")}
    if not args.no_compile:
        gelus["compiled exact"] = torch.compile(lambda v: F.gelu(v), dynamic=True)
    print("\n| GELU on [10, 511*64] | " + " | ".join(f"{n} us" for n in gelus) + " |")
    print("|---|" + "---|" * len(gelus))
    fwd_t = time_rounds({n: (lambda f=f: f(x.detach())) for n, f in gelus.items()}, args.seconds, args.rounds)
    both_t = time_rounds({n: (lambda f=f: f(x).backward(g)) for n, f in gelus.items()}, args.seconds, args.rounds)
    print("| forward | " + " | ".join(f"{min(v) * 1e6:.0f}" for v in fwd_t.values()) + " |")
    print("| forward + backward | " + " | ".join(f"{min(v) * 1e6:.0f}" for v in both_t.values()) + " |")


if __name__ == "__main__":
    main()
