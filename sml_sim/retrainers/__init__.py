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


# A variant (e.g. sml-s) and the method it ablates (sml): in a scenario the variant starts from the
# method's settings, so an ablation changes only what it ablates.
VARIANT_OF: dict[str, str] = {}


def register(name: str, cls: type[Retrainer], preset: dict, description: str,
             variant_of: str | None = None) -> None:
    METHODS[name] = (cls, preset, description)
    if variant_of is not None:
        VARIANT_OF[name] = variant_of


def scenario_params(name: str, method_params: dict[str, dict]) -> dict:
    """The settings ``name`` runs with under a scenario's ``[methods.*]`` sections.

    A registered variant listed under its own name (``sml-s``, ``sml-cnn``, ...) takes the sections of
    the method it ablates (``[methods.sml]``), then its ablation preset, then its own section, if any.
    Any other name, including a named configuration with ``kind``, takes only its own section."""
    own = dict(method_params.get(name, {}))
    base = VARIANT_OF.get(name)
    if base is None or "kind" in own:
        return own
    inherited = {k: v for k, v in method_params.get(base, {}).items() if k != "kind"}
    return {**inherited, **METHODS[name][1], **own}


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
