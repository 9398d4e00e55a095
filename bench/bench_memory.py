"""Resident memory after each period of a replay, with and without handing freed heap back to the OS.

    .venv/bin/python bench/bench_memory.py [--dataset synthetic-yelp] [--scale S] [--methods sml]
        [--threads 2] [--no-trim]
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 .venv/bin/python bench/bench_memory.py --methods sml --no-trim

Replays the stream with the engine (no store) and prints the process's current resident set (not
the peak) when each period's results arrive. The engine calls ``release_freed_memory`` (glibc's
``malloc_trim``) after every method and period; ``--no-trim`` replaces it with a no-op, which is
how the engine behaved before, so the two runs show what the trim is worth. Also prints each
method's retraining + evaluation seconds over the replay (to compare runs with and without an
allocator setting, e.g. oneDNN's primitive cache off) and the cost of faulting in fresh memory.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import sml_sim.engine as engine_module
from sml_sim.data import DatasetSpec, load_dataset
from sml_sim.engine import MethodResult, MethodSpec, ReplayEngine


def resident_mb() -> float:
    """The current resident set size of this process (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic-yelp")
    ap.add_argument("--scale", type=float, default=None)
    ap.add_argument("--data", default=None, help="the data file of a real dataset")
    ap.add_argument("--methods", default="sml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-trim", action="store_true", help="do not hand freed heap memory back (the old behaviour)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.no_trim:
        engine_module.release_freed_memory = lambda: None
    trims: list[float] = []  # seconds of each malloc_trim the engine makes
    real_trim = engine_module._MALLOC_TRIM
    if real_trim is not None:
        def timed_trim(pad: int) -> int:
            t0 = time.perf_counter()
            try:
                return real_trim(pad)
            finally:
                trims.append(time.perf_counter() - t0)

        engine_module._MALLOC_TRIM = timed_trim

    ds = load_dataset(DatasetSpec(args.dataset, data=args.data, scale=args.scale))
    engine = ReplayEngine(ds, [MethodSpec(m, {}) for m in args.methods.split(",")], seed=0, device="cpu")
    after: dict[int, float] = {}
    seconds: dict[str, float] = {}

    def on_event(e) -> None:
        if isinstance(e, MethodResult):
            after[e.period - 1] = resident_mb()
            seconds[e.method] = seconds.get(e.method, 0.0) + e.retrain_s + e.eval_s

    engine.subscribe(on_event)
    t0 = time.perf_counter()
    engine.prepare()
    start = resident_mb()
    engine.run()
    periods = sorted(after)
    print(f"# {ds.source}, methods {args.methods}, trim {'off' if args.no_trim else 'on'}, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"resident MiB after pre-training: {start:.0f}")
    print("period: " + "  ".join(f"{t}:{after[t]:.0f}" for t in periods))
    first, last = after[periods[0]], after[periods[-1]]
    print(f"first retraining period {first:.0f} MiB, last {last:.0f} MiB, max {max(after.values()):.0f} MiB")
    if trims:
        print(f"heap trims: {len(trims)}, {min(trims) * 1000:.1f}-{max(trims) * 1000:.1f} ms each")
    print("retraining + evaluation seconds over the replay: "
          + ", ".join(f"{m} {s:.1f}" for m, s in seconds.items()))
    print(f"first touch of 100 MB of fresh memory: {first_touch_ms():.1f} ms; once mapped: "
          f"{first_touch_ms(mapped=True):.1f} ms (what a trim makes the next period pay again)")


def first_touch_ms(mapped: bool = False, mib: int = 100) -> float:
    """Milliseconds to fill ``mib`` MiB of memory just handed back to the OS (page faults), or of
    memory still mapped."""
    trim = engine_module._malloc_trim()
    best = float("inf")
    for _ in range(3):
        block = torch.empty(mib * 2**18)
        block.fill_(0.0)
        if not mapped:
            del block
            if trim is not None:
                trim(0)
            block = torch.empty(mib * 2**18)
        t0 = time.perf_counter()
        block.fill_(1.0)
        best = min(best, time.perf_counter() - t0)
        del block
    return best * 1000


if __name__ == "__main__":
    main()
