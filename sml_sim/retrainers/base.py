"""The interface every retraining method implements, and what the engine hands it.

The engine drives each method period by period::

    r.start(ctx, initial_mf)                 # once, after the pre-retraining periods
    for t in retrain_start .. last - 1:
        r.fit_period(t, next_period)          # retrain on D_t; next_period = D_{t+1} only where the
                                              # method may see it (SML's meta step, training periods)
        ranks = rank_cases(r, cases(t + 1))   # score the model fixed after t on D_{t+1}

A retrainer reads the stream through ``ctx.dataset`` (``period(t)``, ``upto(t)``); it must not
read beyond the end of period t in ``fit_period(t, ...)`` except through ``next_period``.
``score(cases, rows, n_items)`` may use each case's history before ``cases.positions[row]``
(sequential models), never the case itself or anything later.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from sml_sim.data.base import Dataset, PeriodData


class Cancelled(Exception):
    """The user asked the running step to stop; nothing of the step is committed."""


@dataclass
class ReplayContext:
    dataset: Dataset
    device: torch.device
    seed: int
    cancel: threading.Event | None = None
    progress: Callable[[str, float], None] | None = None  # (method, fraction of the period's work)
    _tensors: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def generator(self, *keys) -> torch.Generator:
        """A generator seeded by (run seed, keys): the same draws whatever ran before (resume)."""
        digest = hashlib.sha256(repr((self.seed, *keys)).encode()).digest()
        g = torch.Generator(device=self.device)
        g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        return g

    def tensors(self, data: PeriodData) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) of a period slice as device tensors (cached per slice)."""
        key = (data.offset, len(data))
        if key not in self._tensors:
            if len(self._tensors) > 8:
                self._tensors.clear()
            self._tensors[key] = (
                torch.as_tensor(np.ascontiguousarray(data.users), device=self.device),
                torch.as_tensor(np.ascontiguousarray(data.items), device=self.device),
            )
        return self._tensors[key]

    def n_items_seen(self, t: int) -> int:
        """Items seen up to the end of period t are the ids 0..n-1 (ids follow first appearance)."""
        end = int(self.dataset.offsets[t + 1])
        return int(self.dataset.items[:end].max()) + 1 if end else 1

    def n_users_seen(self, t: int) -> int:
        end = int(self.dataset.offsets[t + 1])
        return int(self.dataset.users[:end].max()) + 1 if end else 1


class Retrainer(ABC):
    """One retraining method. Subclasses set ``kind`` and implement the abstract methods."""

    kind: str = ""
    needs_initial_mf: bool = False  # MF methods start from the shared pre-trained MF
    uses_next_period: bool = False  # may train on D_{t+1} during training periods (SML)
    # The settings a method takes, with their defaults (their types are the settings' types), and
    # the allowed values of its text settings; ``check_params`` checks a scenario against both.
    defaults: dict = {}
    choices: dict[str, tuple[str, ...]] = {}
    meanings: dict[str, str] = {}  # a few words per setting, for `sml-sim methods METHOD`

    @classmethod
    def settings_problem(cls, settings: dict) -> str | None:
        """What is wrong with a combination of settings (each one already fits its type and range),
        or None. ``settings`` holds every setting: the defaults, the preset and the scenario's."""
        return None

    @classmethod
    def idle_settings(cls, given: set[str], settings: dict) -> list[str]:
        """Of the ``given`` settings, those that do nothing with these ``settings`` (e.g. a CNN's filter
        count under a weighted-sum transfer)."""
        return []

    def __init__(self, name: str, params: dict | None = None):
        self.name = name
        self.params = dict(params or {})
        self.ctx: ReplayContext | None = None

    def start(self, ctx: ReplayContext, initial=None) -> None:
        self.ctx = ctx

    @abstractmethod
    def fit_period(self, t: int, next_period: PeriodData | None = None) -> dict:
        """Retrain on period t; returns extra facts worth storing (losses, sizes)."""

    @abstractmethod
    def score(self, cases, rows: np.ndarray, n_items: int) -> torch.Tensor:
        """Scores [len(rows), n_items] of the given cases against items 0..n_items-1."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def report(self, fraction: float) -> None:
        """Progress within the period, and the place where a cancel request is honoured."""
        assert self.ctx is not None
        self.ctx.check()
        if self.ctx.progress is not None:
            self.ctx.progress(self.name, fraction)

    def param(self, key: str, default):
        value = self.params.get(key, default)
        return type(default)(value) if default is not None and not isinstance(default, bool) else value
