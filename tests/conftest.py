"""Shared fixtures: where the real data lives, tiny synthetic streams, the CLI in-process and as a
subprocess.

Helpers are handed out as fixtures (factories) so test modules never import this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ real data


def _shared_data_dir() -> Path:
    override = os.environ.get("SML_SIM_SHARED_DATA")
    if override:
        return Path(override)
    return REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real sample data (../shared/data beside the repo, or $SML_SIM_SHARED_DATA)."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real sample data not found at {path} (set SML_SIM_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def ml100k(shared_data) -> Path:
    path = shared_data / "ml-100k" / "u.data"
    if not path.is_file():
        pytest.skip(f"MovieLens 100k not found at {path}")
    return path


@pytest.fixture(scope="session")
def yelp_sample(shared_data) -> Path:
    path = shared_data / "yelp-sample" / "yelp_academic_dataset_review.json"
    if not path.is_file():
        pytest.skip(f"Yelp sample not found at {path}")
    return path


# ------------------------------------------------------------------ torch threads


@pytest.fixture
def one_thread():
    """torch on one thread for the test (small tensors on a busy 2-core box: threads only cost),
    restored afterwards so other test modules see the default."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ tiny streams


def toy_arrays(n: int = 3000, n_users: int = 80, n_items: int = 120, *, seed: int = 0, rank: int = 3,
               late_newcomers: int = 0):
    """A low-rank preference stream: (users, items, times), time-sorted unix seconds.

    ``late_newcomers`` of the last interactions involve users and items never seen before, as in a
    real stream (so a truncated dataset has fewer users and items than the whole one).
    """
    rng = np.random.default_rng(seed)
    uf = rng.normal(size=(n_users, rank))
    itf = rng.normal(size=(n_items, rank))
    users = rng.integers(0, n_users, n)
    logits = uf[users] @ itf.T * 1.5
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    items = (prob.cumsum(1) > rng.random(n)[:, None]).argmax(1)
    if late_newcomers:
        k = late_newcomers
        users[-k:] = n_users + rng.integers(0, max(1, k // 4), k)
        items[-k:] = n_items + rng.integers(0, max(1, k // 3), k)
    times = np.sort(rng.integers(1_500_000_000, 1_500_000_000 + 50 * 86400, n))
    return users.astype(np.int64), items.astype(np.int64), times.astype(np.int64)


@pytest.fixture
def make_dataset():
    """Factory: a Dataset from raw arrays (or a toy stream), cut into equal-count periods."""
    from sml_sim.data.base import RawStream, Split, build_dataset
    from sml_sim.data.protocols import equal_count_cut

    def make(users=None, items=None, times=None, *, periods: int = 8, split=(5, 1, 2), retrain_start: int = 2,
             name: str = "toy", **toy):
        if users is None:
            users, items, times = toy_arrays(**toy)
        raw = RawStream(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64),
                        np.asarray(times, dtype=np.int64))
        return build_dataset(raw, name=name, source=f"{name} (test)", is_synthetic=True, params={},
                             min_user=1, min_item=1, cut=equal_count_cut(periods),
                             split_for=lambda n: Split.from_counts(n, *split, retrain_start))

    return make


@pytest.fixture(scope="session")
def toy_stream():
    """The toy_arrays function (a low-rank stream generator)."""
    return toy_arrays


def write_stream_csv(path: Path, users, items, times) -> Path:
    with open(path, "w") as f:
        f.write("user,item,time\n")
        for u, i, t in zip(users, items, times):
            f.write(f"u{u},i{i},{t}\n")
    return path


def write_scenario(folder: Path, name: str = "tiny", *, methods=("full", "fine", "spmf", "pop", "random"),
                   periods: int = 8, split: str = "5/1/2", retrain_start: int = 2, full_epochs: int = 1,
                   n: int = 2500, seed: int = 0, extra: str = "") -> Path:
    """A tiny csv stream and a scenario TOML around it (MF methods with one epoch); returns the TOML."""
    folder.mkdir(parents=True, exist_ok=True)
    users, items, times = toy_arrays(n=n, seed=seed, late_newcomers=n // 20)
    write_stream_csv(folder / f"{name}.csv", users, items, times)
    toml = folder / f"{name}.toml"
    toml.write_text(
        f'[scenario]\nname = "{name}"\n'
        f'[dataset]\nprotocol = "csv"\ndata = "{name}.csv"\nperiods = {periods}\nsplit = "{split}"\n'
        f"retrain_start = {retrain_start}\n"
        f"[run]\nmethods = {list(methods)!r}\nseed = 0\ndevice = \"cpu\"\n"
        "[pretrain]\nepochs = 1\ndim = 8\n"
        f"[methods.full]\nepochs = {full_epochs}\n"
        "[methods.fine]\nepochs = 1\n"
        "[methods.spmf]\nepochs = 1\nreservoir = 300\n" + extra
    )
    return toml


@pytest.fixture
def tiny_scenario(tmp_path):
    """Factory: write_scenario into the test's tmp_path (or ``folder=``)."""

    def make(name: str = "tiny", folder: Path | None = None, **kw) -> Path:
        return write_scenario(folder or tmp_path, name, **kw)

    return make


@pytest.fixture(scope="session")
def scenario_writer():
    """write_scenario itself, for module-scoped fixtures."""
    return write_scenario


# ------------------------------------------------------------------ the CLI


@pytest.fixture
def cli(monkeypatch):
    """Invoke the Typer app in-process: cli(*args, env={...}) -> Result (stdout, stderr, exit_code).
    torch's thread count, which commands set (--threads, or a resumed run's own), is restored after."""
    import torch
    from typer.testing import CliRunner

    from app.cli import app

    runner = CliRunner()
    threads = torch.get_num_threads()

    def invoke(*args, env: dict | None = None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)

    yield invoke
    torch.set_num_threads(threads)


def sml_sim_command() -> list[str]:
    exe = Path(sys.executable).parent / "sml-sim"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "app.cli"]


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("SML_SIM_DEBUG", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def sml_sim():
    """Run the installed `sml-sim` console script as a real process."""

    def run(*args, cwd=None, timeout: float = 120, env: dict | None = None, popen: bool = False):
        cmd = sml_sim_command() + [str(a) for a in args]
        kwargs = dict(cwd=cwd or REPO, env=subprocess_env(**(env or {})), text=True,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if popen:
            return subprocess.Popen(cmd, **kwargs)
        return subprocess.run(cmd, timeout=timeout, **kwargs)

    return run


def assert_one_line_error(result, code: int = 2, *, contains: str | None = None) -> str:
    """Exit ``code``, stderr a single non-empty line, no traceback anywhere."""
    stderr = result.stderr
    stdout = result.stdout
    exit_code = getattr(result, "exit_code", getattr(result, "returncode", None))
    assert exit_code == code, f"exit {exit_code}, expected {code}; stderr={stderr!r} stdout={stdout!r}"
    assert "Traceback" not in stderr + stdout, stderr + stdout
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    if contains is not None:
        assert contains.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture
def one_line_error():
    return assert_one_line_error


@pytest.fixture
def db_counts():
    """Row counts of the store's tables: {table: count}."""
    import sqlite3

    def counts(db_file: Path) -> dict:
        con = sqlite3.connect(db_file)
        try:
            names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return {n: con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
        finally:
            con.close()

    return counts


def interrupted_run(store, scenario_file, steps: int = 1):
    """A run of the scenario that stopped after ``steps`` periods, as if its process had been killed
    (its checkpoints kept, its status 'interrupted'); returns its Replay."""
    from db.replay import Replay
    from sml_sim.config import load_scenario

    replay = Replay.new(store, load_scenario(scenario_file))
    replay.engine.run(until=replay.engine.first_step + steps - 1)
    replay.interrupted()
    return replay


@pytest.fixture
def live_python_process():
    """(host:pid) of a live Python process other than this one, as another sml-sim process would be."""
    import socket
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield f"{socket.gethostname()}:{proc.pid}"
    finally:
        proc.kill()
        proc.wait()
