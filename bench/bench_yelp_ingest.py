"""Streaming ingest of a paper-size Yelp review file: time and peak memory.

    .venv/bin/python bench/bench_yelp_ingest.py [--scale 1.0] [--text-bytes 600] [--keep FILE]

Writes a Yelp-format JSON-lines file (the real field names and layout, with synthetic content: the
synthetic-yelp stream at --scale plus a review text of about --text-bytes characters per line, so
scale 1.0 gives ~3.0M lines and a file of ~2.3 GB), then runs `sml-sim ingest yelp --data FILE` in
a child process and reports its wall time and peak RSS (getrusage of the child). Target (issue 7):
under 2 minutes and under 2 GB of RAM on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sml_sim.data.synthetic import generate_yelp_like

WORDS = ("good food great place service friendly staff would come back again nice menu price "
         "tasty fresh order wait time table dinner lunch coffee").split()


def write_file(path: Path, scale: float, text_bytes: int) -> int:
    raw = generate_yelp_like(scale, seed=0)
    order = np.argsort(raw.times, kind="stable")
    rng = np.random.default_rng(0)
    # A pool of texts reused across lines keeps generation fast; the reader never looks at them.
    texts = [" ".join(rng.choice(WORDS, size=text_bytes // 6)) for _ in range(256)]
    with open(path, "w") as f:
        for n, k in enumerate(order):
            rec = {
                "review_id": f"r{n:021d}",
                "user_id": f"u{int(raw.users[k]):021d}",
                "business_id": f"b{int(raw.items[k]):021d}",
                "stars": float(1 + n % 5), "useful": n % 3, "funny": 0, "cool": n % 2,
                "text": texts[n % len(texts)],
                "date": datetime.fromtimestamp(int(raw.times[k]), UTC).strftime("%Y-%m-%d %H:%M:%S"),
            }
            f.write(json.dumps(rec) + "\n")
    return len(order)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--text-bytes", type=int, default=600)
    ap.add_argument("--keep", default=None, help="write the file here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "yelp_academic_dataset_review.json"
        if not path.exists():
            t0 = time.perf_counter()
            n = write_file(path, args.scale, args.text_bytes)
            print(f"wrote {n:,} lines, {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f}s",
                  flush=True)
        db = Path(tmp) / "ingest.db"
        cli = [sys.executable, "-m", "app.cli", "ingest", "yelp", "--data", str(path), "--db", f"sqlite:///{db}",
               "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            sys.exit(f"ingest failed: {proc.stderr.strip()}")
        summary = json.loads(proc.stdout)
        print("| file GB | kept interactions | users | items | ingest s (read+filter+cut+store) | peak RSS MB |")
        print("|---|---|---|---|---|---|")
        print(f"| {path.stat().st_size / 1e9:.2f} | "
              f"{summary['interactions']:,} | {summary['users']:,} | {summary['items']:,} | {wall:.0f} | "
              f"{peak_mb:.0f} |")


if __name__ == "__main__":
    main()
