"""A run of the replay engine bound to the store: shared by the CLI and the TUI.

Creating a run loads the dataset, registers it, and records the configuration; resuming reads the
configuration back, rebuilds the dataset from it, and starts the engine from each method's last
committed period. The store subscribes to the engine: each arriving period is written (idempotently)
and each (method, period) result is committed in one transaction.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import torch

from db.store import Store, StoreError, db_option, fingerprint, refuse_if_held_here, this_process
from sml_sim.config import RunConfig
from sml_sim.data import load_dataset, reads_a_file
from sml_sim.data.base import Dataset
from sml_sim.engine import MethodResult, PeriodArrived, ReplayEngine, checkpoint_file, resolve_device


def threads_of(stored_config: dict) -> int | None:
    """The torch CPU thread count a run was started with (None for runs recorded before it was kept)."""
    return stored_config.get("threads")


def same_settings(stored_config: dict, config: RunConfig) -> bool:
    """Whether a stored run was started with ``config`` (the thread counts it recorded aside). A
    file's dataset seed is not compared: it changes nothing there, and earlier versions recorded
    the run's --seed in it."""
    stored = {k: v for k, v in stored_config.items() if k not in ("threads", "threads_before")}
    given = config.as_dict()
    if reads_a_file(config.dataset) and isinstance(stored.get("dataset"), dict):
        stored["dataset"] = {**stored["dataset"], "seed": given["dataset"]["seed"]}
    return stored == given


def checkpoint_root(store: Store) -> Path:
    """Where a store's runs keep their checkpoints: beside the store's real file, named after it, so
    that a link to the store (another name, another folder) finds the same ones, and a link named
    like some other store never reaches, or clears, that store's."""
    path = store.sqlite_path
    if path is not None:
        real = path.resolve()
        return real.parent / "sml-sim-checkpoints" / real.name
    home = Path(os.environ.get("SML_SIM_HOME", Path.home() / ".cache" / "sml-sim"))
    return home / "checkpoints" / hashlib.sha256(store.url.encode()).hexdigest()[:12]


def committed_periods(results: list[dict]) -> tuple[dict[str, int], set[str]]:
    """Each method's last committed period, and the methods that failed."""
    committed: dict[str, int] = {}
    failed = set()
    for r in results:
        committed[r["method"]] = max(committed.get(r["method"], -1), r["period"])
        if r["status"] == "failed":
            failed.add(r["method"])
    return committed, failed


def missing_checkpoints(store: Store, run_id: int) -> list[Path]:
    """The checkpoint files an unfinished run needs to continue and that are not there (a store
    copied or moved without its sml-sim-checkpoints/ folder)."""
    if store.run(run_id).status == "finished":
        return []
    folder = checkpoint_root(store) / f"run-{run_id}"
    committed, failed = committed_periods(store.results(run_id))
    return [path for method, period in committed.items() if method not in failed
            for path in [checkpoint_file(folder, method, period)] if not path.exists()]


class MissingCheckpoints(StoreError):
    """An unfinished run cannot continue here: checkpoints it needs are not where they should be."""


class Replay:
    view_only = False  # opened to be looked at: neither claimed nor continued (see ``resume``)

    def __init__(self, store: Store, run_id: int, config: RunConfig, dataset: Dataset, dataset_id: int,
                 cancel: threading.Event | None = None):
        self.store = store
        self.run_id = run_id
        self.config = config
        self.dataset = dataset
        self.dataset_id = dataset_id
        self.cancel = cancel or threading.Event()
        self._stats = dataset.period_stats()
        self._stored = store.stored_periods(dataset_id)
        if self._stored and not store.read_only:  # raw ids of periods stored by an earlier version
            store.write_periods(dataset_id, dataset, sorted(self._stored), self._stats)
        committed, failed = committed_periods(store.results(run_id))
        self.engine = ReplayEngine(
            dataset, config.method_specs(), seed=config.seed, device=resolve_device(config.device),
            pretrain=config.pretrain, checkpoint_dir=checkpoint_root(store) / f"run-{run_id}",
            committed=committed, failed=failed, cancel=self.cancel,
        )
        self.engine.subscribe(self._record)

    # -------------------------------------------------------------- construction

    @classmethod
    def new(cls, store: Store, config: RunConfig, progress=None, cancel=None, dataset: Dataset | None = None) -> Replay:
        """A new run of ``config``; ``dataset``, when the caller has already read it (to refuse
        unusable data before opening the UI), must be ``config.dataset`` as loaded."""
        device = str(resolve_device(config.device))
        if dataset is None:
            dataset = load_dataset(config.dataset, progress=progress)
        dataset_id = store.register_dataset(dataset, fingerprint(dataset.params, dataset.source))
        # The CPU thread count changes the rounding of parallel sums, hence the results: kept with the
        # run so that continuing it uses the same (``threads_of``).
        recorded = {**config.as_dict(), "threads": torch.get_num_threads()}
        run_id = store.create_run(dataset_id, config.scenario, recorded, config.methods, config.seed, device)
        # Leftovers of a deleted database of the same name must not be loaded into this run.
        shutil.rmtree(checkpoint_root(store) / f"run-{run_id}", ignore_errors=True)
        return cls(store, run_id, config, dataset, dataset_id, cancel)

    @classmethod
    def resume(cls, store: Store, run_id: int, progress=None, cancel=None, take_over: bool = False,
               command: str = "run --resume", view_only: bool = False) -> Replay:
        """Continue a run. ``take_over``: also one that a process of another machine (or of this one
        under another host name, as in a restarted container) seems to hold, which this one cannot
        check; never one that a live process of this machine holds. ``command``: the sml-sim command
        (with its run option) that the take-over hint names. ``view_only``: open it to be looked at
        even without its checkpoints; it is then neither claimed nor continued."""
        info = store.run(run_id)
        refuse_if_held_here(info)
        if info.status == "running" and info.owner not in (None, this_process()) and not take_over:
            # on another host (a dead local one reads "interrupted")
            raise StoreError(f"run {run_id} is being run by another process ({info.owner}) right now; wait "
                             "for it, or stop it first (its committed periods are kept); if it is gone (another "
                             f"machine, or a container since restarted), `sml-sim {command} {run_id} --force"
                             f"{db_option(store.url)}` continues it here")
        missing = [] if view_only else missing_checkpoints(store, run_id)
        if missing:  # said before anything is loaded, and the run is left as it was
            folder = missing[0].parent
            link = store.sqlite_path
            if link is not None:  # opened through a link: earlier versions named the folder after the link
                named_for_link = link.resolve().parent / "sml-sim-checkpoints" / link.name / f"run-{run_id}"
                if named_for_link != folder and named_for_link.is_dir():
                    raise MissingCheckpoints(f"run {run_id}'s checkpoints are in {named_for_link}, named after the link "
                                     f"the store was opened by (as earlier versions did); move that folder to "
                                     f"{folder} to continue")
            where = ("sml-sim-checkpoints/OLD_STORE_NAME/run-{n}/ next to the old store" if store.sqlite_path
                     else "the old machine's or $SML_SIM_HOME's checkpoints/<id>/run-{n}/").format(n=run_id)
            raise MissingCheckpoints(f"run {run_id} cannot continue: its checkpoints are not in {folder} (missing "
                             f"{', '.join(p.name for p in missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                             f"if this store was copied or moved, copy {where} to {folder}/")
        config = RunConfig.from_dict(info.config)
        data = config.dataset.data
        if data is not None and not Path(data).expanduser().exists():  # moved or renamed since
            raise StoreError(f"run {run_id} reads its data from {data}, which is not there now: put the file "
                             "back, or a link to it (a run continues only on the data it started with)")
        dataset = load_dataset(config.dataset, progress=progress)
        fp = fingerprint(dataset.params, dataset.source)
        if store.dataset_id(fp) != info.dataset_id:
            # Names, sizes and times differ: a file copied again or touched has the same content.
            if not store.holds_same_data(info.dataset_id, dataset):
                raise StoreError(f"run {run_id}: its dataset now reads differently from the one stored when the "
                                 f"run started ({info.source}: the file changed, or this version of sml-sim "
                                 "reads it differently); start a new run instead")
            store.refingerprint(info.dataset_id, fp)
        store.mark_used(info.dataset_id)
        if info.status != "finished" and not view_only and not store.claim_run(run_id, info.owner):
            raise StoreError(f"run {run_id} was taken up by another process while this one prepared it; wait for "
                             "it, or stop it first (its committed periods are kept)")
        replay = cls(store, run_id, config, dataset, info.dataset_id, cancel)
        replay.view_only = view_only
        return replay

    # -------------------------------------------------------------- the store as a listener

    def _record(self, event) -> None:
        if isinstance(event, PeriodArrived):
            if event.period not in self._stored:
                self.store.write_periods(self.dataset_id, self.dataset, [event.period], self._stats)
                self._stored.add(event.period)
        elif isinstance(event, MethodResult):
            self.store.commit_result(self.run_id, event, event.cases)

    # -------------------------------------------------------------- lifecycle

    def run(self) -> None:
        self.engine.run()
        self.finish()

    def finish(self) -> None:
        if self.engine.finished:
            self.store.set_run_status(self.run_id, "finished")
            root = checkpoint_root(self.store)
            shutil.rmtree(root / f"run-{self.run_id}", ignore_errors=True)
            for folder in (root, root.parent):  # and the folders above, once no run needs them
                try:
                    folder.rmdir()
                except OSError:  # not empty (another run's checkpoints), or already gone
                    break

    def interrupted(self, error: str | None = None) -> None:
        self.store.set_run_status(self.run_id, "failed" if error else "interrupted", error)
