"""The replay engine: advances the clock one period at a time, retrains every method on what has
arrived, and scores each on the next period.

It knows nothing of storage or UI: it reports through events (plain dataclasses) to listeners that
the store and the interfaces subscribe. Per (method, period) it writes a checkpoint file, then emits
the result; a listener commits it. A killed run resumes from each method's last committed period
(its checkpoint) and, since every random draw is seeded by (seed, method, period), ends with exactly
the results of an uninterrupted run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sml_sim.data.base import Dataset
from sml_sim.evaluation import CaseSet, build_cases, metrics_from_ranks, rank_cases
from sml_sim.retrainers import make_retrainer
from sml_sim.retrainers.base import Cancelled, ReplayContext, Retrainer
from sml_sim.retrainers.mf_methods import pretrain_mf

# ------------------------------------------------------------------ events


@dataclass
class PeriodArrived:
    """Period ``period`` has been collected: listeners store its interactions."""

    period: int


@dataclass
class Progress:
    """Work inside a step: ``task`` is a method name or "pretrain"/"evaluate"."""

    period: int
    task: str
    fraction: float


@dataclass
class MethodStarted:
    period: int
    method: str


@dataclass
class MethodResult:
    method: str
    period: int  # the evaluated period (t + 1)
    split: str
    in_sample: bool
    status: str  # ok | failed
    error: str | None
    n_cases: int
    metrics: dict
    retrain_s: float
    eval_s: float
    extra: dict = field(default_factory=dict)
    sampled_rank: np.ndarray | None = None
    full_rank: np.ndarray | None = None
    n_candidates: np.ndarray | None = None
    cases: CaseSet | None = None


@dataclass
class StepFinished:
    period: int  # the evaluated period


Listener = Callable[[object], None]


@dataclass
class MethodSpec:
    name: str
    params: dict = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available to torch")
    return torch.device(device)


class ReplayEngine:
    def __init__(
        self,
        dataset: Dataset,
        methods: list[MethodSpec],
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        pretrain: dict | None = None,
        checkpoint_dir: Path | None = None,
        committed: dict[str, int] | None = None,
        failed: set[str] | None = None,
        cancel: threading.Event | None = None,
    ):
        self.dataset = dataset
        self.seed = seed
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.pretrain_params = dict(pretrain or {})
        self.checkpoint_dir = checkpoint_dir
        self.cancel = cancel or threading.Event()
        self.listeners: list[Listener] = []
        self.ctx = ReplayContext(dataset, self.device, seed, self.cancel, self._on_progress)
        self.retrainers: dict[str, Retrainer] = {m.name: make_retrainer(m.name, m.params) for m in methods}
        self.committed = dict(committed or {})  # method -> last committed evaluated period
        self.failed = set(failed or ())
        # Methods the user paused: skipped by step(); when resumed they catch up period by period.
        self.paused: set[str] = set()
        self.prepared = False
        self._current = 0

    # -------------------------------------------------------------- the clock

    @property
    def first_step(self) -> int:
        return self.dataset.split.retrain_start

    @property
    def last_step(self) -> int:
        """Last period retrained on (its model is scored on the final period)."""
        return self.dataset.n_periods - 2

    def _next_for(self, methods) -> int:
        pending = [self.committed.get(m, self.first_step) for m in methods if m not in self.failed]
        return min(pending, default=self.last_step + 1)

    @property
    def next_step(self) -> int:
        """First period t whose result (on t + 1) some live, unpaused method still lacks."""
        return self._next_for(m for m in self.retrainers if m not in self.paused)

    @property
    def finished(self) -> bool:
        return self._next_for(self.retrainers) > self.last_step

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(self, event) -> None:
        for listener in self.listeners:
            listener(event)

    def _on_progress(self, task: str, fraction: float) -> None:
        self.emit(Progress(self._current, task, fraction))

    # -------------------------------------------------------------- preparation

    def prepare(self) -> None:
        """Store the periods before retraining, pre-train the shared initial MF, start every method."""
        if self.prepared:
            return
        if self.finished:  # nothing left to do (a finished run resumed): no checkpoints needed
            self.prepared = True
            return
        for t in range(self.first_step + 1):
            self.emit(PeriodArrived(t))
        self._current = self.first_step
        fresh = [r for n, r in self.retrainers.items() if n not in self.committed]
        initial = None
        if any(r.needs_initial_mf for r in self.retrainers.values()):
            initial = self._initial_mf(need=any(r.needs_initial_mf for r in fresh))
        for name, r in self.retrainers.items():
            self.ctx.check()
            r.start(self.ctx, initial if r.needs_initial_mf else None)
            if name in self.committed and name not in self.failed and self.committed[name] <= self.last_step:
                r.load_state_dict(self._load_checkpoint(name, self.committed[name]))
        self.prepared = True

    def _initial_mf(self, need: bool):
        path = self.checkpoint_dir / "_initial.pt" if self.checkpoint_dir else None
        if not need:  # every MF method resumes from its own checkpoint: the initial model is not read
            return pretrain_mf_shell(self.ctx, self.pretrain_params)
        if path is not None and path.exists():
            model = pretrain_mf_shell(self.ctx, self.pretrain_params)
            model.load_state_dict(_read_checkpoint(path, self.device))
            return model
        model = pretrain_mf(self.ctx, self.pretrain_params)
        if path is not None:
            self._atomic_save(model.state_dict(), path)
        return model

    # -------------------------------------------------------------- one step

    def step(self) -> list[MethodResult]:
        """Retrain every pending method on period t = next_step and score it on t + 1."""
        self.prepare()
        t = self.next_step
        if t > self.last_step:
            return []
        self._current = t
        ds = self.dataset
        target = t + 1
        next_in_training = target <= ds.split.train[1]
        self.emit(PeriodArrived(target))
        cases = build_cases(ds, target, self.seed)
        results = []
        for name, r in self.retrainers.items():
            if name in self.failed or name in self.paused or self.committed.get(name, self.first_step) > t:
                continue
            self.ctx.check()
            self.emit(MethodStarted(t, name))
            give_next = r.uses_next_period and next_in_training
            try:
                t0 = time.perf_counter()
                extra = r.fit_period(t, ds.period(target) if give_next else None) or {}
                self._sync()
                retrain_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                self.emit(Progress(t, f"{name}: evaluate", 0.0))
                ranks = rank_cases(r, cases, self.device)
                self._sync()
                eval_s = time.perf_counter() - t0
                release_freed_memory()
            except Cancelled:
                raise
            except Exception as exc:  # NaN loss, out of memory, a bug: isolate it to this method
                # Failure isolation: this method is marked failed, the others go on.
                self.failed.add(name)
                result = MethodResult(name, target, ds.split.split_of(target), give_next, "failed",
                                      _one_line(exc), len(cases), {}, 0.0, 0.0, cases=cases)
                self.emit(result)
                results.append(result)
                continue
            result = MethodResult(
                name, target, ds.split.split_of(target), give_next, "ok", None, len(cases),
                metrics_from_ranks(ranks.sampled, ranks.full), retrain_s, eval_s, extra,
                ranks.sampled, ranks.full, cases.n_candidates, cases,
            )
            self.ctx.check()
            self._save_checkpoint(name, target, r)
            self.emit(result)  # the store commits it here
            self.committed[name] = target
            self._drop_checkpoint(name, target - 1)
            results.append(result)
        self.emit(StepFinished(target))
        return results

    def run(self, until: int | None = None) -> None:
        """Step until the last period (or until ``until``, the last period retrained on)."""
        self.prepare()
        stop = self.last_step if until is None else min(until, self.last_step)
        while self.next_step <= stop:
            self.step()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -------------------------------------------------------------- checkpoints

    def _ckpt_path(self, method: str, period: int) -> Path:
        return checkpoint_file(self.checkpoint_dir, method, period)

    @staticmethod
    def _atomic_save(obj, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(obj, tmp)
        os.replace(tmp, path)

    def _save_checkpoint(self, method: str, period: int, r: Retrainer) -> None:
        if self.checkpoint_dir is not None:
            self._atomic_save(r.state_dict(), self._ckpt_path(method, period))

    def _drop_checkpoint(self, method: str, period: int) -> None:
        if self.checkpoint_dir is not None:
            self._ckpt_path(method, period).unlink(missing_ok=True)

    def _load_checkpoint(self, method: str, period: int) -> dict:
        path = self._ckpt_path(method, period) if self.checkpoint_dir else None
        if path is None or not path.exists():
            raise FileNotFoundError(f"no checkpoint of {method} for period {period} (looked for {path})")
        return _read_checkpoint(path, self.device)


class CheckpointError(Exception):
    """A checkpoint a run needs to continue cannot be read (damaged or truncated): the run cannot go
    on from where it was, but nothing it stored is wrong."""


def _read_checkpoint(path: Path, device: torch.device):
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - unpickling a damaged file raises almost anything
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"the checkpoint {path} cannot be read ({reason}): restore it from a copy of the "
                              "checkpoints folder, or start the run again as a new run") from exc


def checkpoint_file(folder: Path, method: str, period: int) -> Path:
    """Where a method's state after ``period`` is kept while its run is unfinished."""
    return folder / f"{method}.p{period}.pt"


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


TRIM_SLACK = 384 * 2**20  # growth beyond the size right after the last trim that triggers the next


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


_trim_above = [0]  # resident bytes above which the next call trims


def release_freed_memory() -> None:
    """Hand the heap memory freed by retraining back to the OS (glibc only; else a no-op).

    SML's batches allocate temporaries of a new shape almost every step (the number of distinct
    rows varies), and glibc keeps the freed space inside its heaps, pinned there by small
    longer-lived objects: an SML replay at synthetic-yelp's default scale grew from 0.31 to 0.89 GB
    resident with nothing live to show for it. Called after every method and period, this trims
    once the process has grown TRIM_SLACK beyond its size right after the last trim. Trimming every
    period kept it at ~0.38 GB but hands back SML's working set of temporaries (~0.2 GB here), which
    the next period faults back in (~0.25 ms per MB on this VM: a few percent of a small SML
    period); with the slack above that working set only the heap's creep is handed back, now and
    then. (ONEDNN_PRIMITIVE_CACHE_CAPACITY=0, set before torch starts, halves the memory instead
    for ~4% of SML's time.)
    BENCHMARKS.md, "Memory across a replay"."""
    if _MALLOC_TRIM is None:
        return
    resident = _resident_bytes()
    if resident is not None and resident < _trim_above[0]:
        return
    _MALLOC_TRIM(0)
    _trim_above[0] = (_resident_bytes() or 0) + TRIM_SLACK


def pretrain_mf_shell(ctx: ReplayContext, params: dict):
    """An untrained MF of the right shape, to load a checkpoint into."""
    from sml_sim.models.mf import MF

    return MF(ctx.dataset.n_users, ctx.dataset.n_items, int(params.get("dim", 64))).to(ctx.device)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
