"""Two readings of the paper where SML's defaults follow the authors' code, on validation periods.

    .venv/bin/python bench/bench_readings.py --scenario synthetic-yelp
    .venv/bin/python bench/bench_readings.py --scenario movielens --data ../shared/data/ml-100k/u.data
    .venv/bin/python bench/bench_readings.py --scenario synthetic-adressa

Runs the scenario's ``sml`` next to two configurations of it, in one replay (one thread, the
scenario's seed; the methods do not share state, so each one's figures are those of a run alone):

* ``sml-literal``: the product row of eq. (4) not detached (``detach_product = false``), so eq. (9)'s
  gradient reaches W_hat through it too, as the equations read literally;
* ``sml-serve``: Algorithm 2 line 8 with as many W_hat epochs as Algorithm 1 gives W_hat in a period
  (``serve_w_hat_epochs`` = outer iterations x ``epochs_w_hat``), where the default is one pass.

Prints the mean validation and test Recall@20 of each (BENCHMARKS.md, "The product row's gradient
and Algorithm 2 line 8"). The choice between readings is made on the validation column only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from db.replay import Replay  # noqa: E402
from db.store import Store  # noqa: E402
from sml_sim import report  # noqa: E402
from sml_sim.config import load_scenario, scenario_path  # noqa: E402
from sml_sim.retrainers import scenario_params  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="synthetic-yelp", help="a scenario name or .toml file")
    ap.add_argument("--data", default=None, help="the data file, for a scenario of real data")
    args = ap.parse_args()

    torch.set_num_threads(1)
    path = scenario_path(args.scenario)
    if path is None:
        ap.error(f"no scenario {args.scenario!r}")
    cfg = load_scenario(path)
    if args.data is not None:
        cfg.dataset.data = str(Path(args.data).resolve())
    sml = scenario_params("sml", cfg.method_params)
    serve_epochs = sml.get("outer_iters", 10) * sml.get("epochs_w_hat", 1)
    cfg.method_params["sml-literal"] = {**sml, "kind": "sml", "detach_product": False}
    cfg.method_params["sml-serve"] = {**sml, "kind": "sml", "serve_w_hat_epochs": serve_epochs}
    cfg.methods = ["sml", "sml-literal", "sml-serve"]
    cfg.device = "cpu"
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{folder}/readings.db")
        replay = Replay.new(store, cfg)
        replay.run()
        results = store.results(replay.run_id)
    validation, test = report.split_means(results, "validation"), report.split_means(results, "test")
    print(f"# {cfg.scenario}: sml-serve has serve_w_hat_epochs = {serve_epochs}")
    print("| method | validation Recall@20 | test Recall@20 |")
    print("|---|---|---|")
    for method in cfg.methods:
        print(f"| {method} | {validation[method]['recall@20']:.4f} | {test[method]['recall@20']:.4f} |")


if __name__ == "__main__":
    main()
