"""Retraining methods by name. A method name in --methods or a scenario is one of METHODS, or any
name whose scenario section sets ``kind`` to one of them (e.g. ``[methods.full-5ep] kind = "full"``)."""

from __future__ import annotations

import json
import math

from sml_sim.retrainers.base import Retrainer
from sml_sim.retrainers.mf_methods import (
    SPMF,
    FineTune,
    FullRetrain,
    MostPopular,
    NewItemsFirst,
    RandomScores,
)
from sml_sim.suggest import did_you_mean

METHODS: dict[str, tuple[type[Retrainer], dict, str]] = {
    "full": (FullRetrain, {}, "Full-retrain: MF on all periods so far, warm-started"),
    "fine": (FineTune, {}, "Fine-tune: MF on the new period only"),
    "spmf": (SPMF, {}, "SPMF: MF on the new period plus a reservoir of past positives"),
    "pop": (MostPopular, {}, "most popular items of the last period (reference)"),
    "random": (RandomScores, {}, "random scores (reference, Recall@20 ~ 0.02)"),
    "fresh": (NewItemsFirst, {}, "items first seen in the scored period first (a probe of the sampled "
                                 "metric's candidate pool, not a recommender)"),
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
    if own.get("kind") == name:  # [methods.sml-s] kind = "sml-s" is the variant itself
        del own["kind"]
    base = VARIANT_OF.get(name)
    if base is None or "kind" in own:
        return own
    inherited = {k: v for k, v in method_params.get(base, {}).items() if k != "kind"}
    return {**inherited, **METHODS[name][1], **own}


# Numeric settings that may be 0 (no regularisation, no dropout, a step skipped, a bound off);
# every other numeric setting with a positive default must be positive.
_MAY_BE_ZERO = ("l1", "l2", "dropout", "epochs", "pretrain_epochs", "epochs_w_hat", "epochs_theta",
                "serve_w_hat_epochs", "max_row_norm", "negatives", "conv_layers", "alpha")
_BELOW_ONE, _AT_MOST_ONE = ("dropout",), ("alpha",)  # fractions (a fixed alpha may be 1)


def check_value(label: str, value, default, choices: tuple[str, ...] | None = None) -> None:
    """Refuse a setting whose type or range does not fit its default's (ValueError, one line).

    ``label`` is "where: key", e.g. "[methods.full] epochs"."""
    key = label.rsplit(" ", 1)[-1]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{label} must be true or false, not {toml_text(value)}")
        return
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{label} must be text, not {toml_text(value)}")
        if choices and value not in choices:
            raise ValueError(f"{label} must be one of {', '.join(choices)}, not {toml_text(value)}")
        return
    # One message whatever the fault, naming the whole rule (`sml-sim methods` shows the same).
    fits = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value >= 0
    fits = fits and not (isinstance(default, int) and not isinstance(value, int))  # 20.0 for 20: TOML tells them apart
    fits = fits and not (value == 0 and default > 0 and key not in _MAY_BE_ZERO)
    fits = fits and not ((key in _BELOW_ONE and value >= 1) or (key in _AT_MOST_ONE and value > 1))
    if not fits:
        raise ValueError(f"{label} must be a {allowed_values(key, default)}, not {toml_text(value)}")
    if isinstance(default, int) and value > MAX_WHOLE:  # far past any use, and past what C++ sizes take
        raise ValueError(f"{label} must be at most {MAX_WHOLE:,}, not {value}")


MAX_WHOLE = 10**9


def toml_text(value) -> str:
    """A value as a scenario file writes it (true, "5"), for messages about one."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def allowed_values(key: str, default, choices: tuple[str, ...] | None = None) -> str:
    """What ``check_value`` accepts for a setting, in words (for `sml-sim methods METHOD`)."""
    if isinstance(default, bool):
        return "true, false"
    if isinstance(default, str):
        return ", ".join(choices) if choices else "text"
    kind = "whole number" if isinstance(default, int) else "number"
    if key in _BELOW_ONE + _AT_MOST_ONE:
        return f"{kind} from 0 to {'below ' if key in _BELOW_ONE else ''}1"
    return f"{kind} >= 0" if key in _MAY_BE_ZERO or default == 0 else f"{kind} > 0"


def check_params(name: str, params: dict, where: str | None = None) -> None:
    """Refuse settings that method ``name`` does not take, or values it cannot use, before anything runs.

    A typo in a scenario (``epoch = 10``) would otherwise be ignored silently and the run would use the
    default. ``where`` names the place in messages (default ``[methods.NAME]``)."""
    params = dict(params)
    kind = params.pop("kind", name)
    where = where or f"[methods.{name}]"
    if kind not in METHODS:
        raise ValueError(f"{where}: unknown method {kind!r}; known: {', '.join(METHODS)}")
    cls = METHODS[kind][0]
    for key, value in params.items():
        if key not in cls.defaults:
            takes = ", ".join(cls.defaults) if cls.defaults else "no settings"
            raise ValueError(f"{where}: unknown setting {key!r}{did_you_mean(key, cls.defaults)}; {kind} takes {takes}")
        check_value(f"{where} {key}", value, cls.defaults[key], cls.choices.get(key))
    problem = cls.settings_problem({**cls.defaults, **METHODS[kind][1], **params})
    if problem:
        raise ValueError(f"{where}: {problem}")


def check_section_does_something(name: str, method_params: dict[str, dict]) -> None:
    """Refuse a setting in a variant's or named configuration's own section that does nothing with the
    settings the method runs with (a CNN setting under a weighted-sum transfer). A base method's own
    section is not checked: it may hold settings meant for the variants that inherit it."""
    section = method_params.get(name, {})
    kind = section.get("kind", name)
    if kind not in METHODS or (kind == name and name not in VARIANT_OF):
        return
    cls, preset, _ = METHODS[kind]
    settings = {**cls.defaults, **preset,
                **{k: v for k, v in scenario_params(name, method_params).items() if k != "kind"}}
    idle = cls.idle_settings(set(section) - {"kind"}, settings)
    if idle:
        raise ValueError(f"[methods.{name}]: {idle[0]} does nothing for {name} (its transfer is "
                         f"{settings.get('transfer')!r}{', use_conv = false' if settings.get('use_conv') is False else ''}"
                         f"{', use_fc = false' if settings.get('use_fc') is False else ''}); drop it")


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
