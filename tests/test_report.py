"""Summary figures computed from stored results: the paper's RI."""

from __future__ import annotations

import pytest

from sml_sim import report


def _means(recall, ndcg):
    return {**{f"recall@{k}": v for k, v in zip((5, 10, 20), recall)},
            **{f"ndcg@{k}": v for k, v in zip((5, 10, 20), ndcg)}}


def test_paper_ri_reproduces_table_1():
    """Table 1, Adressa: SML over Full-retrain has RI 319.7% (Recall) and 393.1% (NDCG), the means of
    the per-K improvements; over Fine-tune 82.8% and 135.5%."""
    means = {
        "sml": _means((.2815, .3794, .4498), (.1838, .2156, .2336)),
        "full": _means((.0495, .0915, .1631), (.0303, .0437, .0616)),
        "fine": _means((.1085, .2235, .3776), (.0594, .0962, .1351)),
    }
    means = {m: {**row, **{f"full_{k}": v for k, v in row.items()}} for m, row in means.items()}
    ri = {m: report.ri_of(means["sml"], means[m]) for m in ("full", "fine")}
    assert ri["full"]["recall"] == pytest.approx(319.7, abs=0.05)
    assert ri["full"]["ndcg"] == pytest.approx(393.1, abs=0.05)
    assert ri["fine"]["recall"] == pytest.approx(82.8, abs=0.05)
    assert ri["fine"]["ndcg"] == pytest.approx(135.5, abs=0.05)


def _rows(split: str, recall20: dict[str, float]) -> list[dict]:
    return [{"method": m, "period": 5 if split == "validation" else 8, "split": split, "in_sample": False,
             "status": "ok", "n_cases": 10, "metrics": {k: v for k in report.METRIC_KEYS}, "retrain_s": 0.0}
            for m, v in recall20.items()]


def test_ri_reference_is_sml_when_it_ran_else_the_best_on_validation():
    assert report.ri_reference(_rows("test", {"sml": 0.1, "full": 0.3})) == "sml"
    assert report.ri_reference(_rows("test", {"fine": 0.1, "full": 0.3})) == "full"  # no validation: by test
    assert report.ri_reference([]) is None
    # a probe or sanity reference is never the best while a method under study ran
    assert report.ri_reference(_rows("test", {"fine": 0.1, "fresh": 0.3, "pop": 0.3})) == "fine"
    assert report.ri_reference(_rows("test", {"random": 0.1, "pop": 0.3})) == "pop"
    # the test periods never choose the method they are reported against: validation does
    both = _rows("validation", {"fine": 0.3, "full": 0.1}) + _rows("test", {"fine": 0.1, "full": 0.3})
    assert report.ri_reference(both) == "fine"


def test_without_sml_by_name_an_sml_configuration_is_the_reference():
    """A study of renamed SML variants showed RI of an SPMF configuration."""
    params = {"sml-a": {"kind": "sml"}, "sml-b": {"kind": "sml"}, "spmf-5k": {"kind": "spmf"}}
    results = (_rows("validation", {"sml-a": 0.1, "sml-b": 0.2, "spmf-5k": 0.3, "full": 0.25})
               + _rows("test", {"sml-a": 0.4, "sml-b": 0.1, "spmf-5k": 0.3, "full": 0.2}))
    assert report.ri_reference(results, params) == "sml-b"  # the better SML on validation
    assert report.ri_reference(_rows("test", {"sml-s": 0.1, "full": 0.3})) == "sml-s"  # an ablation is SML too


def test_ri_compares_each_pair_over_the_periods_both_scored():
    """A method that failed (or is catching up) is compared with the reference on its periods only."""
    def row(method, period, recall, split="test", status="ok"):
        metrics = {k: recall for k in report.METRIC_KEYS}
        return {"method": method, "period": period, "split": split, "in_sample": False, "status": status,
                "n_cases": 10, "metrics": metrics, "retrain_s": 0.0}

    results = [row("sml", 5, 0.2), row("sml", 6, 0.4), row("fine", 5, 0.1), row("fine", 6, 0.0, status="failed"),
               row("full", 5, 0.1), row("full", 6, 0.2), row("pop", 4, 0.5, split="validation")]
    ri = report.relative_improvements_shared(results, "test", "sml")
    assert set(ri) == {"fine", "full"}
    assert ri["fine"]["periods"] == 1 and ri["fine"]["recall@20"] == pytest.approx(100.0)  # 0.2 vs 0.1
    assert ri["full"]["periods"] == 2 and ri["full"]["recall"] == pytest.approx(100.0)  # 0.3 vs 0.15
    assert report.relative_improvements_shared(results, "test", "caser") == {}


def test_new_item_share_reads_the_breakdown_counts():
    bd = {"sml": {"old user x old item": (0.2, 30), "old user x new item": (0.9, 50),
                  "new user x old item": (0.1, 5), "new user x new item": (1.0, 15)}}
    assert report.new_item_share(bd) == pytest.approx(0.65)
    assert report.new_item_share({}) is None


def test_references_are_known_by_their_kind():
    """A named configuration of pop (``[methods.mypop] kind = "pop"``) is a reference too."""
    refs = report.reference_names(["fine", "mypop", "myrandom"], {"mypop": {"kind": "pop"},
                                                                   "myrandom": {"kind": "random"}})
    assert refs == {"mypop", "myrandom"}
    assert report.ri_reference(_rows("test", {"fine": 0.1, "mypop": 0.3}), {"mypop": {"kind": "pop"}}) == "fine"


def test_few_candidates_share_counts_cases_with_at_most_k_candidates_on_the_fullest_method():
    import numpy as np

    results = [{"method": m, "period": p, "split": "test", "in_sample": False, "status": "ok", "n_cases": 4}
               for m in ("a", "b") for p in (8, 9)]
    results.append({"method": "a", "period": 7, "split": "validation", "in_sample": False, "status": "ok", "n_cases": 3})

    def case(method, period, counts):
        return {"method": method, "period": period, "n_candidates": np.array(counts, dtype=np.int32)}

    ranks = [case("a", 7, [1, 1, 1]),  # validation: not counted
             case("a", 8, [20, 21, 1000, 5]), case("a", 9, [1000, 1000]),
             case("b", 8, [20, 21, 1000, 5])]  # b reached one period only
    assert report.few_candidates_share(ranks, results, "test") == pytest.approx(2 / 6)
    assert report.few_candidates_share(ranks, results, "test", k=4) == 0
    assert report.few_candidates_share([], results, "test") is None


def test_case_weighted_means_weigh_each_period_by_its_cases():
    rows = [{"method": "m", "period": p, "split": "test", "status": "ok", "in_sample": False, "n_cases": n,
             "retrain_s": 1.0, "metrics": {k: v for k in report.METRIC_KEYS}}
            for p, n, v in ((5, 100, 0.2), (6, 300, 0.6))]
    assert report.split_means(rows)["m"]["recall@20"] == pytest.approx(0.4)
    assert report.split_means(rows, by_cases=True)["m"]["recall@20"] == pytest.approx(0.5)
    assert report.case_count_range(rows) == (100, 300) and report.case_count_range(rows, "validation") is None
