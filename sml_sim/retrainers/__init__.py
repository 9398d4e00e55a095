"""Retraining methods by name. A method name in --methods or a scenario is one of METHODS, or any
name whose scenario section sets ``kind`` to one of them (e.g. ``[methods.full-5ep] kind = "full"``)."""

from __future__ import annotations

from sml_sim.retrainers.base import Retrainer
from sml_sim.retrainers.mf_methods import SPMF, FineTune, FullRetrain, MostPopular, RandomScores

METHODS: dict[str, tuple[type[Retrainer], dict, str]] = {
    "full": (FullRetrain, {}, "Full-retrain: MF on all periods so far, warm-started"),
    "fine": (FineTune, {}, "Fine-tune: MF on the new period only"),
    "spmf": (SPMF, {}, "SPMF: MF on the new period plus a reservoir of past positives"),
    "pop": (MostPopular, {}, "most popular items of the last period (reference)"),
    "random": (RandomScores, {}, "random scores (reference, Recall@20 ~ 0.02)"),
}


def register(name: str, cls: type[Retrainer], preset: dict, description: str) -> None:
    METHODS[name] = (cls, preset, description)


def make_retrainer(name: str, params: dict | None = None) -> Retrainer:
    params = dict(params or {})
    kind = params.pop("kind", name)
    if kind not in METHODS:
        raise ValueError(f"unknown method {kind!r}; known: {', '.join(METHODS)}")
    cls, preset, _ = METHODS[kind]
    return cls(name, {**preset, **params})


def _register_optional() -> None:
    """Methods in modules of their own register here, so the list above stays the one index."""
    import importlib

    for module in ("sml_sim.retrainers.sml", "sml_sim.retrainers.sequential"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_register_optional()
