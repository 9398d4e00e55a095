"""What the replay screen shows, computed from plain data (no widgets here).

Results are the dicts ``db.store.Store.results`` returns (method, period, split, in_sample, status,
error, n_cases, metrics, retrain_s, eval_s, extra). The app keeps one such list, filled from the
store on opening and from the engine's ``MethodResult`` events while it runs, and every view
(charts, table, log) is a pure function of that list and the user's choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

KS = (5, 10, 20)
SPLIT_STYLE = {"pretrain": "grey62", "train": "dodger_blue1", "validation": "yellow", "test": "magenta"}
SPLIT_SHORT = {"pretrain": "pre", "train": "trn", "validation": "val", "test": "tst"}

# One colour per method, in configuration order, shared by the charts and the table so a line and
# its row read as the same method: 256-colour numbers, which plotext and rich both understand
# (plotext's own names lack yellow, and its "orange" is colour 3). All from the 6x6x6 cube and the
# grey ramp (16-255): Textual re-maps the 16 system colours through its theme, which drew bright red
# and bright magenta in the same red.
PALETTE = [51, 208, 201, 46, 196, 33, 226, 255, 37, 135]


def method_colors(methods: list[str]) -> dict[str, tuple[int, str]]:
    """Per method: (plotext colour, rich colour)."""
    return {m: (PALETTE[i % len(PALETTE)], f"color({PALETTE[i % len(PALETTE)]})") for i, m in enumerate(methods)}


@dataclass(frozen=True)
class MetricChoice:
    """The metric shown in the chart and the table: Recall/NDCG, K, sampled or full ranking."""

    kind: str = "recall"  # recall | ndcg
    k: int = 20
    full: bool = False

    @property
    def key(self) -> str:
        return self.key_for(self.kind)

    def key_for(self, kind: str) -> str:
        return f"{'full_' if self.full else ''}{kind}@{self.k}"

    @property
    def label(self) -> str:
        name = "Recall" if self.kind == "recall" else "NDCG"
        return f"{name}@{self.k}, {self.ranking}"

    @property
    def short(self) -> str:
        name = "Recall" if self.kind == "recall" else "NDCG"
        return f"{'full-ranking ' if self.full else ''}{name}@{self.k}"  # ("full" alone reads as Full-retrain)

    @property
    def ranking(self) -> str:
        # The sampled ranking puts each case's item against up to 999 sampled negatives: fewer on a
        # small catalogue, so no fixed count is named here.
        return "full ranking" if self.full else "sampled ranking"

    def next_kind(self) -> MetricChoice:
        return replace(self, kind="ndcg" if self.kind == "recall" else "recall")

    def next_k(self) -> MetricChoice:
        return replace(self, k=KS[(KS.index(self.k) + 1) % len(KS)] if self.k in KS else KS[-1])

    def toggle_full(self) -> MetricChoice:
        return replace(self, full=not self.full)


def result_row(event) -> dict:
    """A store-shaped result dict from an engine ``MethodResult`` (arrays and cases left out)."""
    return {
        "method": event.method, "period": int(event.period), "split": event.split,
        "in_sample": bool(event.in_sample), "status": event.status, "error": event.error,
        "n_cases": int(event.n_cases), "metrics": dict(event.metrics or {}),
        "retrain_s": float(event.retrain_s), "eval_s": float(event.eval_s), "extra": {},
    }


def merge_result(results: list[dict], row: dict) -> None:
    """Insert or replace the (method, period) row, keeping the store's order (period, method)."""
    for i, r in enumerate(results):
        if r["method"] == row["method"] and r["period"] == row["period"]:
            results[i] = row
            return
    results.append(row)
    results.sort(key=lambda r: (r["period"], r["method"]))


def _ok(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@dataclass
class Series:
    """Chart data: per method, (period, value) points. In-sample points are kept apart."""

    points: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    in_sample: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def metric_series(results: list[dict], key: str, methods: list[str]) -> Series:
    out = Series({m: [] for m in methods}, {})
    for r in results:
        m = r["method"]
        if m not in out.points or r["status"] != "ok":
            continue
        value = r["metrics"].get(key)
        if not _ok(value):
            continue
        target = out.in_sample.setdefault(m, []) if r["in_sample"] else out.points[m]
        target.append((r["period"], float(value)))
    return out


def timing_series(results: list[dict], methods: list[str]) -> Series:
    out = Series({m: [] for m in methods}, {})
    for r in results:
        if r["method"] in out.points and r["status"] == "ok":
            out.points[r["method"]].append((r["period"], float(r["retrain_s"])))
    return out


@dataclass
class Row:
    """One line of the results table, already formatted."""

    method: str
    failed: bool
    error: str | None
    period: str  # "7 tst"
    last: dict[str, str]  # kind -> value of the last period
    mean: dict[str, str]  # kind -> running mean over the test periods so far
    ri: dict[str, str]  # kind -> relative improvement of the reference over this method
    retrain: str
    n_test: int


@dataclass
class Table:
    rows: list[Row]
    reference: str | None  # the method whose relative improvement is shown (sml, else the best)
    n_test: int  # test periods in the running mean (the most any method has)


def fmt_value(value) -> str:
    return f"{value:.4f}" if _ok(value) else "-"


def fmt_seconds(seconds) -> str:
    if not _ok(seconds):
        return "-"
    return f"{seconds:.2f}s" if seconds < 100 else f"{seconds:.0f}s"


def fmt_ri(value) -> str:
    if not _ok(value):
        return "-"
    return f"{value:+.1f}%" if abs(value) < 1000 else f"{value:+.0f}%"


def results_table(results: list[dict], methods: list[str], choice: MetricChoice,
                  method_params: dict[str, dict] | None = None) -> Table:
    """Per method: the last period's metrics, the test running mean, the relative improvement."""
    from sml_sim import report

    means = report.split_means(results, "test")
    # The same reference as `sml-sim runs`: it does not change with the chart's metric.
    reference = report.ri_reference(results, method_params)
    # Each method against the reference over the test periods both have scored: while a resumed
    # method catches up, or after one failed, unlike means would be compared otherwise.
    improvements = report.relative_improvements_shared(results, "test", reference) if reference else {}
    last: dict[str, dict] = {}
    failure: dict[str, dict] = {}
    for r in results:
        if r["status"] == "failed":
            failure[r["method"]] = r
        elif r["method"] not in last or r["period"] >= last[r["method"]]["period"]:
            last[r["method"]] = r
    rows = []
    for method in methods:
        r = last.get(method)
        f = failure.get(method)
        m = means.get(method, {})
        period = "-"
        if f is not None:
            period = f"{f['period']} failed"
        elif r is not None:
            period = f"{r['period']} {SPLIT_SHORT.get(r['split'], r['split'])}"
            if r["in_sample"]:
                period += "*"
        kinds = ("recall", "ndcg")
        rows.append(Row(
            method=method, failed=f is not None, error=f["error"] if f else None, period=period,
            last={k: fmt_value(r["metrics"].get(choice.key_for(k))) if r and f is None else "-" for k in kinds},
            mean={k: fmt_value(m.get(choice.key_for(k))) for k in kinds},
            ri={k: ("ref" if method == reference else fmt_ri(improvements.get(method, {}).get(choice.key_for(k))))
                for k in kinds} if reference else {k: "-" for k in kinds},
            retrain=fmt_seconds(r["retrain_s"]) if r and f is None else "-",
            n_test=int(m.get("periods", 0)),
        ))
    return Table(rows, reference, max((int(v.get("periods", 0)) for v in means.values()), default=0))


@dataclass(frozen=True)
class CatchUp:
    """Methods behind the others (paused, then resumed): the engine's next steps retrain only them,
    one period per step, on periods ``first`` .. ``front - 1``; the clock moves on after that."""

    methods: list[str]
    first: int  # the first period they retrain on (the engine's next_step)
    front: int  # the period the others retrain on next

    @property
    def periods(self) -> str:
        """The periods they retrain on: "period 3" or "periods 3-5"."""
        return _span(self.first, self.front - 1)

    @property
    def scored(self) -> str:
        """The periods those retrainings are scored on."""
        return _span(self.first + 1, self.front)


def _span(a: int, b: int) -> str:
    return f"period {a}" if a == b else f"periods {a}-{b}"


def catch_up(methods: list[str], committed: dict[str, int], first_step: int, paused=(), failed=()) -> CatchUp | None:
    """Who lags behind, from the engine's bookkeeping (``committed``: method -> last evaluated period,
    which is also the next period it retrains on; ``next_step`` is the least of them over live,
    unpaused methods). None when every such method is level."""
    live = {m: committed.get(m, first_step) for m in methods if m not in paused and m not in failed}
    if not live:
        return None
    front = max(live.values())
    behind = [m for m in methods if m in live and live[m] < front]
    return CatchUp(behind, min(live.values()), front) if behind else None


def step_summary(results: list[dict], period: int, choice: MetricChoice, order: list[str] | None = None,
                 only: set[str] | None = None) -> str:
    """One log line for an evaluated period: each method's value of the chosen metric (of the
    methods in ``only``, when given: those scored by the step just done)."""
    rows = [r for r in results if r["period"] == period and (only is None or r["method"] in only)]
    if order:
        rank = {m: i for i, m in enumerate(order)}
        rows.sort(key=lambda r: rank.get(r["method"], len(rank)))
    parts = []
    for r in rows:
        if r["status"] == "ok":
            star = "*" if r["in_sample"] else ""
            parts.append(f"{r['method']} {fmt_value(r['metrics'].get(choice.key))}{star}")
        else:
            parts.append(f"{r['method']} FAILED")
    return " · ".join(parts)
