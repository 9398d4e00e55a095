"""Run configuration: a dataset spec, methods with hyperparameters, seed and device.

A scenario file (``scenarios/*.toml``) is one such configuration, written out so users can copy and
edit it::

    [scenario]
    name = "movielens"
    [dataset]
    protocol = "movielens"
    [run]
    methods = ["sml", "full", "fine", "spmf", "pop", "random"]
    seed = 0
    [pretrain]              # the shared initial MF
    epochs = 20
    [methods.full]          # hyperparameters of one method (defaults in the retrainer classes)
    epochs = 20
    [methods.full-5ep]      # a second configuration of the same method, usable in `methods`
    kind = "full"
    epochs = 5
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from sml_sim.data.base import DataError
from sml_sim.data.protocols import PROTOCOLS, DatasetSpec
from sml_sim.suggest import did_you_mean, nearest

# [dataset.csv] keys (the csv reader's options; the command line's --user-col etc.), with their types.
CSV_KEYS = {"user_col": "", "item_col": "", "time_col": "", "time_format": "", "delimiter": "", "header": True}
SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
DEFAULT_METHODS = ["full", "fine", "spmf", "pop", "random"]


@dataclass
class RunConfig:
    scenario: str
    dataset: DatasetSpec
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    method_params: dict[str, dict] = field(default_factory=dict)
    pretrain: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    # What the scenario file leaves out that its user should hear about; not part of the settings
    # (not stored, not compared).
    notes: list[str] = field(default_factory=list, compare=False, repr=False)
    # Dataset flags whose values came from the scenario file, with the names it writes them under:
    # messages about them name those (set by the command line; not stored, not compared).
    file_flags: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def as_dict(self) -> dict:
        return {
            "scenario": self.scenario, "dataset": self.dataset.as_dict(), "methods": list(self.methods),
            "method_params": self.method_params, "pretrain": self.pretrain, "seed": self.seed,
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(scenario=d["scenario"], dataset=DatasetSpec.from_dict(d["dataset"]), methods=list(d["methods"]),
                   method_params=dict(d.get("method_params", {})), pretrain=dict(d.get("pretrain", {})),
                   seed=int(d.get("seed", 0)), device=d.get("device", "auto"))

    def method_specs(self):
        from sml_sim.engine import MethodSpec
        from sml_sim.retrainers import scenario_params

        return [MethodSpec(m, scenario_params(m, self.method_params)) for m in self.methods]


def scenario_path(name_or_path: str) -> Path | None:
    """A .toml path, or the name of a bundled scenario; None when it is neither."""
    p = Path(name_or_path)
    if p.suffix == ".toml":
        if not p.exists():
            raise DataError(f"no scenario file at {p}")
        return p
    bundled = SCENARIO_DIR / f"{name_or_path}.toml"
    return bundled if bundled.exists() else None


# What a scenario file may hold: its sections, and the keys and value types of the plain ones.
SECTIONS = ("scenario", "dataset", "run", "pretrain", "methods")
_SCENARIO_KEYS = {"name": "", "description": ""}
_RUN_KEYS = {"methods": [], "seed": 0, "device": "auto"}
_DATASET_TYPES = {"protocol": "", "data": "", "scale": 0.0, "seed": 0, "periods": 0, "period_length": "",
                  "min_user_interactions": 0, "min_item_interactions": 0, "split": "", "retrain_start": 0}


def _table(doc: dict, path: Path, name: str) -> dict:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise DataError(f"{path}: [{name}] must be a section (a table), not {value!r}")
    return value


def _unknown(path: Path, where: str, keys, allowed) -> None:
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise DataError(f"{path}: unknown {where} key(s) {', '.join(unknown)}{did_you_mean(unknown[0], allowed)}; "
                        f"allowed: {', '.join(allowed)}")


def _check_types(path: Path, where: str, values: dict, types: dict) -> None:
    from sml_sim.retrainers import check_value, toml_text

    for key, value in values.items():
        kind = types[key]
        if isinstance(kind, list):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DataError(f"{path}: {where} {key} must be a list of names, e.g. [\"sml\", \"full\"], "
                                f"not {value!r}")
            continue
        if key.endswith("_col") and isinstance(value, int) and not isinstance(value, bool):
            continue  # a 0-based column index
        try:
            if isinstance(kind, str | bool):
                check_value(f"{where} {key}", value, kind)
            elif isinstance(kind, float):  # a number (check_value's ranges are for method settings)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{where} {key} must be a number, not {toml_text(value)}")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where} {key} must be a whole number, not {toml_text(value)}")
        except ValueError as exc:
            raise DataError(f"{path}: {exc}") from None


def load_scenario(path: Path) -> RunConfig:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: not valid TOML ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from exc
    _unknown(path, "top-level section", doc, SECTIONS)
    scenario, run = _table(doc, path, "scenario"), _table(doc, path, "run")
    _unknown(path, "[scenario]", scenario, _SCENARIO_KEYS)
    _check_types(path, "[scenario]", scenario, _SCENARIO_KEYS)
    _unknown(path, "[run]", run, _RUN_KEYS)
    _check_types(path, "[run]", run, _RUN_KEYS)
    if not 0 <= run.get("seed", 0) < 2**63:
        raise DataError(f"{path}: [run] seed must be 0 or more and below 2^63, not {run['seed']!r}")
    if run.get("device", "auto") not in ("auto", "cpu", "cuda"):
        raise DataError(f"{path}: [run] device must be auto, cpu or cuda, not {run['device']!r}")
    ds = dict(_table(doc, path, "dataset"))
    _unknown(path, "[dataset]", ds, list(DatasetSpec.__dataclass_fields__))  # a typo of protocol first
    protocol = ds.pop("protocol", None)
    if protocol is None:
        raise DataError(f"{path}: [dataset] needs protocol = one of {', '.join(PROTOCOLS)}")
    if protocol not in PROTOCOLS:
        raise DataError(f"{path}: [dataset] protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}"
                        f"{did_you_mean(protocol, PROTOCOLS)}")
    csv = ds.pop("csv", {})
    _check_types(path, "[dataset]", ds, _DATASET_TYPES)
    if not isinstance(csv, dict):
        raise DataError(f"{path}: [dataset.csv] must be a section (a table), not {csv!r}")
    _unknown(path, "[dataset.csv]", csv, CSV_KEYS)
    _check_types(path, "[dataset.csv]", csv, CSV_KEYS)
    csv = {k: str(v) if k.endswith("_col") else v for k, v in csv.items()}
    pretrain = _table(doc, path, "pretrain")
    from sml_sim.retrainers.mf_methods import PRETRAIN_DEFAULTS

    _unknown(path, "[pretrain]", pretrain, PRETRAIN_DEFAULTS)
    from sml_sim.retrainers import check_value

    for key, value in pretrain.items():
        try:
            check_value(f"[pretrain] {key}", value, PRETRAIN_DEFAULTS[key])
        except ValueError as exc:
            raise DataError(f"{path}: {exc}") from None
    methods = _table(doc, path, "methods")
    for name, section in methods.items():
        if not isinstance(section, dict):
            raise DataError(f"{path}: [methods.{name}] must be a section (a table), not {section!r}")
        inner = next((key for key, value in section.items() if isinstance(value, dict)), None)
        if inner is not None:  # [methods.my.cfg]: TOML reads a dot as a section inside a section
            raise DataError(f"{path}: [methods.{name}] holds a table, {inner}: method settings are plain values (a "
                            f"section name with a dot, [methods.{name}.{inner}], needs quotes: "
                            f"[methods.\"{name}.{inner}\"])")
    if ds.get("data"):  # relative data paths are relative to the scenario file
        d = Path(ds["data"]).expanduser()
        ds["data"] = str(d if d.is_absolute() else (path.parent / d).resolve())
    cfg = RunConfig(
        scenario=scenario.get("name", path.stem),
        dataset=DatasetSpec(protocol=protocol, csv=csv, **ds),
        methods=list(run.get("methods", DEFAULT_METHODS)),
        method_params={k: dict(v) for k, v in methods.items()},
        pretrain=dict(pretrain),
        seed=int(run.get("seed", 0)),
        device=str(run.get("device", "auto")),
    )
    try:
        validate_methods(cfg)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    from sml_sim.retrainers import VARIANT_OF

    used = set(cfg.methods) | {VARIANT_OF[m] for m in cfg.methods if m in VARIANT_OF}  # sml-s takes [methods.sml]
    unlisted = [name for name in methods if name not in used]
    if "methods" not in run and unlisted:  # defined to be run, surely; the defaults run instead
        cfg.notes.append(f"{path}: {', '.join(unlisted)} {'is' if len(unlisted) == 1 else 'are'} configured but not "
                         f"run: [run] has no methods list, so the defaults run ({', '.join(cfg.methods)}); list "
                         "the methods to run there, or give --methods")
    return cfg


def method_name_problem(name: str, builtin) -> str | None:
    """Why ``name`` cannot name a method configuration: it must survive `--methods a,b` and not pass
    for a built-in method (``SML`` next to ``sml``)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        return ("a method name starts with a letter or digit and holds only letters, digits and . _ + - (no "
                "spaces or commas: it must be usable in --methods a,b)")
    if len(name) > MAX_NAME:  # it names checkpoint files
        return f"a method name has at most {MAX_NAME} characters"
    if name not in builtin and name.lower() in builtin:
        return f"differs from the built-in method {name.lower()} only by case; give it a name of its own"
    return None


MAX_NAME = 64


def validate_methods(cfg: RunConfig) -> None:
    """The methods to run exist, once each, and every [methods.*] section's settings fit its method."""
    from sml_sim.retrainers import (
        METHODS,
        check_params,
        check_section_does_something,
        scenario_params,
        toml_text,
    )

    try:
        for name, section in cfg.method_params.items():
            problem = method_name_problem(name, METHODS)
            if problem:
                raise DataError(f"[methods.{name}]: {problem}")
            if "kind" in section:
                kind = section["kind"]
                if not isinstance(kind, str) or kind not in METHODS:
                    raise DataError(f"[methods.{name}] kind {kind!r} is not a method{did_you_mean(kind, METHODS)}; known: "
                                    f"{', '.join(METHODS)}")
                if name in METHODS and kind != name:  # results would carry the built-in's name
                    raise DataError(f"[methods.{name}] kind = \"{kind}\": {name} is a built-in method, and a section "
                                    f"under its name sets its settings; it cannot make it another method. Give the "
                                    f"section a name of its own, e.g. [methods.{kind}-2]")
            elif name not in METHODS:  # a typo in a section name hides its settings
                base = next((m for m in sorted(METHODS, key=len, reverse=True) if name.startswith(f"{m}-")), None)
                close = nearest(name, METHODS)
                if base is not None:  # sml-a: a configuration of sml, most likely
                    also = f" (or did you mean [methods.{close}]?)" if close and close != base else ""
                    raise DataError(f"[methods.{name}] names no built-in method: a configuration of your own "
                                    f"needs a kind, e.g. kind = \"{base}\"{also}")
                hint = f"did you mean [methods.{close}]? " if close else ""
                raise DataError(f"[methods.{name}] names no method: {hint}a section for a new name needs a "
                                f"kind, e.g. kind = \"full\"")
            else:  # a variant is defined by its preset: changing it makes another method under its name
                cls, preset, _ = METHODS[name]
                defining = {k: v for k, v in preset.items() if cls.defaults.get(k) != v}
                changed = sorted(k for k in defining if k in section and section[k] != preset[k])
                if changed:
                    raise DataError(f"[methods.{name}] {changed[0]} = {toml_text(section[changed[0]])} undoes what "
                                    f"defines {name} ({changed[0]} = {toml_text(preset[changed[0]])}); for another "
                                    f"combination use "
                                    f"a section of your own with kind = \"{METHODS[name][0].kind or name}\"")
            check_params(name, section)
        for name in cfg.method_params:  # with every section's values checked, the settings each runs with
            check_section_does_something(name, cfg.method_params)
            twin = next((other for other in cfg.method_params if other != name and other.lower() == name.lower()), None)
            if twin is not None:  # their checkpoint files would be one on a case-insensitive disk
                raise DataError(f"[methods.{name}] and [methods.{twin}] differ only by case; rename one")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if not cfg.methods:
        raise DataError("no methods to run")
    seen = set()
    for m in cfg.methods:
        kind = cfg.method_params.get(m, {}).get("kind", m)
        if kind not in METHODS:
            named = [n for n, sec in cfg.method_params.items() if "kind" in sec]
            raise DataError(f"unknown method {m!r}{did_you_mean(m, list(METHODS) + named)}; known: {', '.join(list(METHODS) + named)} (or a "
                            "scenario [methods.NAME] section with a kind)")
        if m in seen:
            raise DataError(f"method {m!r} is listed twice")
        seen.add(m)
    try:
        for m in cfg.methods:  # a variant's inherited settings, with its preset
            check_params(m, scenario_params(m, cfg.method_params), where=f"method {m}")
    except ValueError as exc:
        raise DataError(str(exc)) from None
