"""SQLite ingest throughput: interactions written per second by the replay writer.

    .venv/bin/python bench/bench_ingest.py [--scale 0.3]

Generates synthetic-yelp at --scale (0.3 = ~0.9M interactions), then writes all periods into a fresh
SQLite file the way `sml-sim ingest` does (one transaction, bulk inserts), and prints the rate.
Target (issue 2): at least 200k interactions/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from db.store import Store, fingerprint
from sml_sim.data import DatasetSpec, load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.3)
    args = ap.parse_args()
    spec = DatasetSpec("synthetic-yelp", scale=args.scale)
    t0 = time.perf_counter()
    ds = load_dataset(spec)
    t_load = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        did = store.register_dataset(ds, fingerprint(spec.as_dict()))
        t0 = time.perf_counter()
        n = store.write_periods(did, ds, range(ds.n_periods))
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = store.write_periods(did, ds, range(ds.n_periods))  # idempotent: writes nothing
        t_again = time.perf_counter() - t0
        size = (Path(tmp) / "bench.db").stat().st_size
    print("| interactions | generate+cut s | write s | interactions/s | rewrite (no-op) s | db MB |")
    print("|---|---|---|---|---|---|")
    print(f"| {n:,} | {t_load:.2f} | {t_write:.2f} | {n / t_write:,.0f} | {t_again:.3f} (wrote {again}) "
          f"| {size / 1e6:.0f} |")


if __name__ == "__main__":
    main()
