"""Summaries and CSV exports computed from stored results (plain dicts in, plain data out).

Only out-of-sample, successful rows enter a validation or test figure: rows marked ``in_sample``
(SML scored on a training period whose data its meta step had seen) are shown but never averaged.
"""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sml_sim.evaluation import KS, METRIC_KEYS

RESULT_COLUMNS = [
    "run_id", "dataset", "source", "scenario", "seed", "method", "period", "split", "in_sample", "status", "n_cases",
    "recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20",
    "full_recall@5", "full_recall@10", "full_recall@20", "full_ndcg@5", "full_ndcg@10", "full_ndcg@20",
    "retrain_s", "eval_s", "error",
]
# Ranks are 0-based (0 = ranked first): a case is a hit at K when its rank is below K. ``user`` and
# ``item`` are the dataset's dense ids (numbered in order of first appearance); ``raw_user`` and
# ``raw_item`` the source file's own ids (the generator's, for synthetic streams).
CASE_COLUMNS = ["run_id", "method", "period", "split", "in_sample", "user", "item", "raw_user", "raw_item",
                "sampled_rank", "full_rank", "user_type", "item_type"]
TABLE_METRICS = [f"{m}@{k}" for m in ("recall", "ndcg") for k in KS]
GROUPS = [("old", "old"), ("old", "new"), ("new", "old"), ("new", "new")]
# Sanity references and probes, not recommenders under study: never "the best" while a method is.
REFERENCE_METHODS = ("pop", "random", "fresh")


def counts_in(row: dict, split: str) -> bool:
    """Whether a stored row enters the split's figures: scored, out of sample, with cases to score
    (a period without test cases has no metric to average)."""
    return row["split"] == split and row["status"] == "ok" and not row["in_sample"] and row["n_cases"] > 0


def failures(results: list[dict]) -> dict[str, tuple[int, str]]:
    """Each failed method's first failed period and error (a failed method stops there)."""
    out: dict[str, tuple[int, str]] = {}
    for r in sorted(results, key=lambda r: r["period"]):
        if r["status"] == "failed" and r["method"] not in out:
            out[r["method"]] = (r["period"], r["error"] or "unknown error")
    return out


def split_means(results: list[dict], split: str = "test", by_cases: bool = False) -> dict[str, dict[str, float]]:
    """Mean over the split's periods of every metric, per method. Periods weigh equally (the spec's reading of
    the paper's "average scores"), or with ``by_cases`` by their test cases, as the authors' code averages
    (the same on equal-count cuts)."""
    by_method: dict[str, list[dict]] = {}
    for r in results:
        if counts_in(r, split):
            by_method.setdefault(r["method"], []).append(r)
    out = {}
    for method, rows in by_method.items():
        weights = [r["n_cases"] for r in rows] if by_cases else None
        out[method] = {k: float(np.average([r["metrics"][k] for r in rows], weights=weights)) for k in METRIC_KEYS}
        out[method]["periods"] = len(rows)
        out[method]["retrain_s"] = float(np.mean([r["retrain_s"] for r in rows]))
    return out


def case_count_range(results: list[dict], split: str = "test") -> tuple[int, int] | None:
    """The fewest and most test cases of the split's scored periods, or None without any."""
    counts = {r["period"]: r["n_cases"] for r in results if counts_in(r, split)}
    return (min(counts.values()), max(counts.values())) if counts else None


def ri_of(ref: dict[str, float], other: dict[str, float]) -> dict[str, float]:
    """The reference's relative improvement over another method's means, in percent: per metric and K,
    and the paper's Table 1 'RI', the mean over K = 5, 10, 20, once for Recall and once for NDCG
    (Table 1's figures are these means; e.g. Adressa, SML over Full-retrain: 468.7, 314.6 and 175.8% at
    K = 5, 10, 20 give its 319.7%)."""
    out = {k: 100.0 * (ref[k] - other[k]) / other[k] if other[k] > 0 else float("nan") for k in METRIC_KEYS}
    for kind in ("recall", "ndcg"):
        out[kind] = float(np.mean([out[f"{kind}@{k}"] for k in KS]))
    return out


def relative_improvements_shared(results: list[dict], split: str, reference: str) -> dict[str, dict[str, float]]:
    """``ri_of`` the reference over each other method, each pair's means taken over the periods both
    have scored (a method that failed, or is still catching up, is compared on its periods only);
    ``periods`` says how many."""
    by_method: dict[str, dict[int, dict]] = {}
    for r in results:
        if counts_in(r, split):
            by_method.setdefault(r["method"], {})[r["period"]] = r["metrics"]
    ref = by_method.get(reference)
    if not ref:
        return {}
    out = {}
    for method, periods in by_method.items():
        shared = sorted(set(periods) & set(ref))
        if method == reference or not shared:
            continue
        a, b = ({k: float(np.mean([rows[p][k] for p in shared])) for k in METRIC_KEYS} for rows in (ref, periods))
        out[method] = {**ri_of(a, b), "periods": len(shared)}
    return out


def ri_reference(results: list[dict], method_params: dict[str, dict] | None = None) -> str | None:
    """Whose improvement RI shows, one method for every split and metric: ``sml`` when it ran (the
    paper's tables); else the best of the run's SML configurations (``kind = "sml"``, the ablations),
    or without any, the best method under study (references and probes only when nothing else ran).
    Best is by mean validation Recall@20, so that test periods never pick the method they are
    reported against; by test Recall@20 only when there is no validation result."""
    validation, test = split_means(results, "validation"), split_means(results, "test")
    methods = sorted(set(validation) | set(test))
    if "sml" in methods:
        return "sml"
    params = method_params or {}
    from sml_sim.retrainers import METHODS

    def kind(m: str) -> str:
        base = params.get(m, {}).get("kind", m)
        return METHODS[base][0].kind if base in METHODS else base

    refs = reference_names(methods, params)
    candidates = ([m for m in methods if kind(m) == "sml"] or [m for m in methods if m not in refs] or methods)
    means = validation if any(m in validation for m in candidates) else test
    ranked = [m for m in candidates if m in means]
    return max(ranked, key=lambda m: means[m]["recall@20"]) if ranked else None


def reference_names(methods: Iterable[str], method_params: dict[str, dict] | None = None) -> set[str]:
    """The run's methods that are references or probes, by kind (``[methods.mypop] kind = "pop"``)."""
    params = method_params or {}
    return {m for m in methods if params.get(m, {}).get("kind", m) in REFERENCE_METHODS}


def best_method(means: dict[str, dict[str, float]], metric: str = "recall@20",
                references: Iterable[str] = REFERENCE_METHODS) -> str | None:
    """The method with the highest ``metric`` (by default test Recall@20), among the methods under
    study when any ran: never one of ``references`` while another method is there."""
    skip = set(references)
    studied = [m for m in means if m not in skip] or list(means)
    return max(studied, key=lambda m: means[m][metric]) if studied else None


def breakdown(case_ranks: Iterable[dict], results: list[dict], split: str = "test", k: int = 20) -> dict:
    """Recall@k by old/new user x old/new item over the split's cases (paper 4.5.1), per method."""
    ok = {(r["method"], r["period"]) for r in results if counts_in(r, split)}
    hits: dict[str, dict[tuple[str, str], list[int]]] = {}
    for c in case_ranks:
        if (c["method"], c["period"]) not in ok:
            continue
        per = hits.setdefault(c["method"], {g: [0, 0] for g in GROUPS})
        for g in GROUPS:
            mask = (c["new_user"] == (g[0] == "new")) & (c["new_item"] == (g[1] == "new"))
            per[g][0] += int((c["sampled_rank"][mask] < k).sum())
            per[g][1] += int(mask.sum())
    return {
        m: {f"{u} user x {i} item": ((h / n) if n else None, n) for (u, i), (h, n) in per.items()}
        for m, per in hits.items()
    }


def new_item_share(bd: dict) -> float | None:
    """The share of the split's cases whose item is new (first seen in the scored period), from a
    ``breakdown`` (every method is scored on the same cases of the periods it reached)."""
    if not bd:
        return None
    # the method with the most cases (one that failed or is catching up covers fewer periods)
    row = max(bd.values(), key=lambda r: sum(n for _, n in r.values()))
    total = sum(n for _, n in row.values())
    return sum(n for g, (_, n) in row.items() if g.endswith("new item")) / total if total else None


def few_candidates_share(case_ranks: Iterable[dict], results: list[dict], split: str = "test",
                         k: int = 20) -> float | None:
    """The share of the split's cases with ``k`` candidates or fewer (their user had interacted with
    nearly every item seen): such a case is a hit at ``k`` whatever the method. Counted on the method
    with the most cases (every method is scored on the same cases of the periods it reached)."""
    ok = {(r["method"], r["period"]) for r in results if counts_in(r, split)}
    few: dict[str, list[int]] = {}
    for c in case_ranks:
        if (c["method"], c["period"]) in ok:
            counts = few.setdefault(c["method"], [0, 0])
            counts[0] += int((c["n_candidates"] <= k).sum())
            counts[1] += len(c["n_candidates"])
    if not few:
        return None
    hits, total = max(few.values(), key=lambda v: v[1])
    return hits / total if total else None


@dataclass
class ExportMeta:
    run_id: int
    dataset: str
    source: str
    scenario: str  # the run's scenario name, and its seed: runs of several seeds concatenate as they are
    seed: int


def open_out(path):
    """The CSV file to write, or standard output for "-" (left open for the caller's later output)."""
    if str(path) == "-":
        return contextlib.nullcontext(sys.stdout)
    return open(path, "w", newline="")  # noqa: SIM115 - a context manager at every call site


def write_results_csv(path, meta: ExportMeta, results: list[dict]) -> int:
    with open_out(path) as f:
        w = _writer(f)
        w.writerow(RESULT_COLUMNS)
        for r in sorted(results, key=lambda r: (r["method"], r["period"])):
            m = r["metrics"]
            w.writerow([meta.run_id, meta.dataset, meta.source, meta.scenario, meta.seed, r["method"], r["period"],
                        r["split"], int(r["in_sample"]), r["status"], r["n_cases"],
                        *[_fmt(m.get(k)) if r["n_cases"] else "" for k in RESULT_COLUMNS[11:23]],
                        f"{r['retrain_s']:.3f}", f"{r['eval_s']:.3f}", r["error"] or ""])
    return len(results)


def write_cases_csv(path, run_id: int, case_ranks: Iterable[dict], results: list[dict],
                    raw_ids: tuple[list[str], list[str]] | None = None) -> int:
    """One row per scored case of every period and method (training periods included: ``split`` and
    ``in_sample`` say which rows a validation or test figure uses). ``raw_ids`` (the source's id of
    each dense user and item id) fills the raw columns; without it they are left empty."""
    about = {(r["method"], r["period"]): (r["split"], int(r["in_sample"])) for r in results}
    raw_users, raw_items = (np.asarray(ids, dtype=object) for ids in raw_ids) if raw_ids else (None, None)
    n = 0
    with open_out(path) as f:
        w = _writer(f)
        w.writerow(CASE_COLUMNS)
        for c in case_ranks:
            ut = np.where(c["new_user"], "new", "old")
            it = np.where(c["new_item"], "new", "old")
            split, in_sample = about.get((c["method"], c["period"]), ("", ""))
            k = len(ut)
            ru = raw_users[c["users"]].tolist() if raw_users is not None else [""] * k
            ri = raw_items[c["items"]].tolist() if raw_items is not None else [""] * k
            w.writerows(zip([run_id] * k, [c["method"]] * k, [c["period"]] * k, [split] * k, [in_sample] * k,
                            c["users"].tolist(), c["items"].tolist(), ru, ri, c["sampled_rank"].tolist(),
                            c["full_rank"].tolist(), ut.tolist(), it.tolist()))
            n += k
    return n


def _writer(f):
    """CSV rows ending in a plain newline (the csv module's default is CRLF, also on standard output)."""
    return csv.writer(f, lineterminator="\n")


def _fmt(x) -> str:
    return "" if x is None else f"{x:.6f}"


def write_filters_csv(path, run_id: int, results: list[dict]) -> int:
    """SML's first-layer transfer filters (paper Figure 7) at each SML method's last period.

    Rows: run_id, method, period, network (user/item), filter, w_prev, w_hat, w_dot -- the filter's
    weights on the three rows of the stack layer.
    """
    last: dict[str, dict] = {}
    for r in results:
        if r["extra"].get("filters") and r["period"] >= last.get(r["method"], {"period": -1})["period"]:
            last[r["method"]] = r
    if not last:
        raise ValueError("this run has no method with convolution filters (an SML whose CNN transfer keeps its "
                         "conv layers has them, such as sml; sml-cnn, sml-ws, sml-ws-fixed and sml-mlp have none)")
    n = 0
    with open_out(path) as f:
        w = _writer(f)
        w.writerow(["run_id", "method", "period", "network", "filter", "w_prev", "w_hat", "w_dot"])
        for method, r in sorted(last.items()):
            for network, filters in r["extra"]["filters"].items():
                for j, (a, b, c) in enumerate(filters):
                    w.writerow([run_id, method, r["period"], network, j, f"{a:.6f}", f"{b:.6f}", f"{c:.6f}"])
                    n += 1
    return n
