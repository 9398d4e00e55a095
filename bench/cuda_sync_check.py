"""Does a retraining period on the GPU wait on the host? Counts the synchronising CUDA calls.

    python3 bench/cuda_sync_check.py [--scale 0.016] [--period 12]

Issue 7 asks that with ``--device cuda`` training, the transfer and evaluation stay on the GPU with
no per-batch host/device copies. This replays synthetic-yelp (``scenarios/synthetic-yelp.toml``'s
settings) on the GPU up to ``--period`` and then runs one more training period of SML, Full-retrain
and Fine-tune, and one evaluation, under ``torch.cuda.set_sync_debug_mode("warn")``, which warns at
every call that makes the host wait for the device. It prints, per method, the synchronising calls
against the number of batches of that period: a count far below the batches means no per-batch sync.
Needs only torch and numpy (the core's dependencies), so it runs with a GPU machine's own Python:
``PYTHONPATH=. python3 bench/cuda_sync_check.py``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sml_sim.config import load_scenario  # noqa: E402
from sml_sim.data import DatasetSpec, load_dataset  # noqa: E402
from sml_sim.evaluation import build_cases, rank_cases  # noqa: E402
from sml_sim.retrainers import make_retrainer, scenario_params  # noqa: E402
from sml_sim.retrainers.base import ReplayContext  # noqa: E402
from sml_sim.retrainers.mf_methods import pretrain_mf  # noqa: E402


def syncs_during(fn, device: torch.device) -> tuple[int, Counter]:
    """Run ``fn`` with CUDA sync warnings on; return how many it raised and where (file:line).
    On the CPU (a dry run of this script) there is nothing to count."""
    if device.type != "cuda":
        fn()
        return 0, Counter()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
            torch.cuda.synchronize()  # the one sync at the end that any timing needs; not counted below
    finally:
        torch.cuda.set_sync_debug_mode("default")
    hits = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return len(hits), Counter(f"{Path(w.filename).name}:{w.lineno}" for w in hits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=None, help="synthetic-yelp size (default: its default)")
    ap.add_argument("--period", type=int, default=12, help="a training period after the retraining start")
    ap.add_argument("--methods", default="sml,full,fine")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only dry-runs the script (counts nothing)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on a GPU machine (or --device cpu for a dry run)")
    sections = load_scenario(ROOT / "scenarios" / "synthetic-yelp.toml").method_params
    ds = load_dataset(DatasetSpec("synthetic-yelp", scale=args.scale))
    t = args.period
    if not ds.split.retrain_start < t < ds.split.train[1]:
        sys.exit(f"--period must lie in {ds.split.retrain_start + 1}..{ds.split.train[1] - 1}")
    ctx = ReplayContext(ds, device, seed=0)
    initial = pretrain_mf(ctx, {"epochs": 2})
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run: nothing counted)"
    print(f"# {name}; torch {torch.__version__}; {ds.source}: period {t} has "
          f"{len(ds.period(t)):,} interactions")
    print("| method | synchronising calls in one period | batches in it | where |\n|---|---|---|---|")
    last = None
    for name in args.methods.split(","):
        r = make_retrainer(name, scenario_params(name, sections))
        r.start(ctx, initial)
        for s in range(ds.split.retrain_start, t):  # untimed, unwatched: reach period t as a replay would
            r.fit_period(s, ds.period(s + 1) if r.uses_next_period else None)
        params = r.params
        if r.kind == "sml":
            n1 = -(-len(ds.period(t)) // int(params.get("batch_w_hat", 1024)))
            n2 = -(-len(ds.period(t + 1)) // int(params.get("batch_theta", 256)))
            batches = int(params.get("outer_iters", 10)) * (n1 + n2)
        else:
            batches = None  # MF methods: epochs x batches, set by their own settings
        count, where = syncs_during(lambda r=r: r.fit_period(t, ds.period(t + 1) if r.uses_next_period else None),
                                    device)
        print(f"| {name} | {count} | {batches if batches is not None else '-'} | "
              f"{', '.join(f'{k} x{v}' for k, v in where.most_common(4)) or '-'} |")
        last = r
    cases = build_cases(ds, t + 1, seed=0)
    count, where = syncs_during(lambda: rank_cases(last, cases, device), device)
    print(f"| evaluation of period {t + 1} ({len(cases.users):,} cases) | {count} | - | "
          f"{', '.join(f'{k} x{v}' for k, v in where.most_common(4)) or '-'} |")


if __name__ == "__main__":
    main()
