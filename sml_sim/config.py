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

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from sml_sim.data.base import DataError
from sml_sim.data.protocols import PROTOCOLS, DatasetSpec

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


def load_scenario(path: Path) -> RunConfig:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: not valid TOML ({exc})") from exc
    ds = dict(doc.get("dataset", {}))
    protocol = ds.pop("protocol", None)
    if protocol not in PROTOCOLS:
        raise DataError(f"{path}: [dataset] protocol must be one of {', '.join(PROTOCOLS)}")
    csv = ds.pop("csv", {})
    unknown = set(ds) - set(DatasetSpec.__dataclass_fields__)
    if unknown:
        raise DataError(f"{path}: unknown [dataset] keys {', '.join(sorted(unknown))}")
    if ds.get("data"):  # relative data paths are relative to the scenario file
        d = Path(ds["data"]).expanduser()
        ds["data"] = str(d if d.is_absolute() else (path.parent / d).resolve())
    run = doc.get("run", {})
    cfg = RunConfig(
        scenario=doc.get("scenario", {}).get("name", path.stem),
        dataset=DatasetSpec(protocol=protocol, csv=csv, **ds),
        methods=list(run.get("methods", DEFAULT_METHODS)),
        method_params={k: dict(v) for k, v in doc.get("methods", {}).items()},
        pretrain=dict(doc.get("pretrain", {})),
        seed=int(run.get("seed", 0)),
        device=str(run.get("device", "auto")),
    )
    validate_methods(cfg)
    return cfg


def validate_methods(cfg: RunConfig) -> None:
    from sml_sim.retrainers import METHODS

    if not cfg.methods:
        raise DataError("no methods to run")
    seen = set()
    for m in cfg.methods:
        kind = cfg.method_params.get(m, {}).get("kind", m)
        if kind not in METHODS:
            raise DataError(f"unknown method {m!r}; known: {', '.join(METHODS)} (or a scenario [methods.NAME] "
                            "section with a kind)")
        if m in seen:
            raise DataError(f"method {m!r} is listed twice")
        seen.add(m)
