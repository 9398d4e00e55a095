"""The core stays free of the UI and the store: importing any module of sml_sim loads neither textual,
typer nor sqlalchemy; db loads neither textual nor typer. Checked in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = r"""
import importlib, json, sys
forbidden = set(sys.argv[1].split(","))
report = {"loaded": {}, "errors": {}}
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        report["errors"][name] = f"{type(exc).__name__}: {exc}"
        continue
    bad = sorted(m for m in forbidden if m in sys.modules)
    if bad:
        report["loaded"][name] = bad
        for m in list(sys.modules):  # attribute later offenders to their own module
            if m.split(".")[0] in forbidden:
                del sys.modules[m]
print(json.dumps(report))
"""


def _modules(package: str) -> list[str]:
    """Every module of the package, found on disk (walk_packages would import the packages here)."""
    root = REPO / package
    names = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if all(p.isidentifier() for p in parts) and all((REPO / Path(*parts[:k]) / "__init__.py").exists()
                                                         for k in range(1, len(parts))):
            names.append(".".join(parts))
    return sorted(set(names))


def _check(package: str, forbidden: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", CHECK, ",".join(forbidden), *_modules(package)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_module_list_is_complete():
    mods = _modules("sml_sim")
    for expected in ("sml_sim.engine", "sml_sim.evaluation", "sml_sim.data.readers", "sml_sim.models.mf",
                     "sml_sim.retrainers.mf_methods", "sml_sim.report", "sml_sim.config"):
        assert expected in mods
    assert "db.store" in _modules("db") and "db.replay" in _modules("db")


@pytest.mark.parametrize("package, forbidden", [
    ("sml_sim", ["textual", "typer", "sqlalchemy"]),
    ("db", ["textual", "typer"]),
])
def test_imports_stay_clean(package, forbidden):
    report = _check(package, forbidden)
    assert not report["errors"], f"modules that fail to import: {report['errors']}"
    assert not report["loaded"], f"modules that pull in {forbidden}: {report['loaded']}"


def test_cli_module_does_not_load_the_tui():
    report = _check_single("app.cli", ["textual"])
    assert not report["loaded"], report


def _check_single(module: str, forbidden: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", CHECK, ",".join(forbidden), module], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert not report["errors"], report["errors"]
    return report
