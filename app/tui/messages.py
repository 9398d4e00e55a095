"""Typed messages from the replay worker thread to the app.

The engine reports through events on the worker thread; the worker turns each into one of these
messages and posts it (``post_message`` is thread-safe). Only the app's message handlers touch
widgets. Every field is plain data: no ORM objects, no tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message


@dataclass
class RunView:
    """What the header needs to know about the run (read once, in the worker, after loading)."""

    run_id: int
    dataset: str
    source: str
    synthetic: bool
    device: str
    n_periods: int
    split: dict  # Split.as_dict(): periods, train, validation, test, retrain_start
    methods: list[str]
    repeats_finished: int | None = None  # a new run with the settings of this finished run
    notes: list[str] = field(default_factory=list)  # the dataset's notes (skipped lines, a scaled split...)
    small_catalogue: str | None = None  # why sampled and full rankings barely differ here, if they do

    def split_of(self, period: int) -> str:
        if period < self.split["retrain_start"]:
            return "pretrain"
        if period <= self.split["train"][1]:
            return "train"
        if period <= self.split["validation"][1]:
            return "validation"
        return "test"

    @property
    def first_test(self) -> int:
        return int(self.split["test"][0])

    @property
    def first_scored(self) -> int:
        return int(self.split["retrain_start"]) + 1


@dataclass
class ReplayLoaded(Message):
    """The dataset is loaded and the run bound to the store (new or resumed)."""

    view: RunView
    results: list[dict]
    replay: object = field(repr=False)  # db.replay.Replay; used by the workers only


@dataclass
class ReplayPrepared(Message):
    """Pre-retraining periods replayed and the initial model trained: stepping may start."""


@dataclass
class LoadProgress(Message):
    """Reading the raw data: ``fraction`` of the file(s) read."""

    fraction: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LoadProgress)


@dataclass
class StepProgress(Message):
    """Work inside a step (engine ``Progress``): throttled to about ten per second."""

    period: int
    task: str
    fraction: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StepProgress)


@dataclass
class PeriodArrived(Message):
    """The replay clock reached ``period`` (its interactions are in the store)."""

    period: int


@dataclass
class MethodStarted(Message):
    period: int  # the period retrained on
    method: str


@dataclass
class MethodScored(Message):
    """One (method, period) result, committed to the store just before this was posted."""

    row: dict  # store-shaped result dict (see app.tui.model.result_row)


@dataclass
class StepDone(Message):
    """Every pending method has been retrained on a period and scored on the next."""

    period: int  # the evaluated period
