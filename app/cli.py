"""The `sml-sim` command line (Typer). Thin: it parses, calls sml_sim and db, and prints.

Every expected failure (bad input, unknown run, unusable store) ends as one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import signal
import sys
from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    name="sml-sim",
    help="Simulate a recommender retrained period by period: replay a timestamped dataset into a store, "
    "retrain SML and the baselines at every period and score each on the next one.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help text: with markup on, "[default: ...]" and "[w_prev, w_hat]" vanished as tags.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
class _Console(Console):
    def on_broken_pipe(self) -> None:
        """`sml-sim run ... | head` (or `2>&1 | head`): the reader left. Rich exits with status 1 here,
        which left the run marked failed; the output now goes nowhere and the run carries on to the
        end, its results stored."""
        stream = sys.stderr if self.stderr else sys.stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


# Piped output keeps long lines whole (no wrapping at 80 columns) so it stays greppable.
out = _Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = _Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


class UserError(Exception):
    pass


def store_trouble(exc: Exception) -> str | None:
    """One line for a store that cannot be used as it is (damaged, locked, full, or of another version's
    shape), from SQLAlchemy's error; None for anything else (a bug: an internal error)."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return None
    reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
    low = reason.lower()
    # The shape first: a column's name (full_rank) may hold any of the words tested after it.
    if any(sign in low for sign in ("no such column", "has no column", "no such table", "not null constraint failed")):
        return (f"the results store does not have the shape this version of sml-sim writes ({reason}): it was "
                "made by another version, or changed by hand; use another --db")
    if "malformed" in low or "file is not a database" in low:
        return f"the results store is damaged ({reason}); restore it from a copy, or use another --db"
    if "database is locked" in low or "database is busy" in low:
        return (f"the results store stayed locked by another process ({reason}); try again when it is done "
                "(whatever was committed is kept)")
    if "database or disk is full" in low:
        return f"no room left for the results store ({reason}); free some space and continue (committed periods are kept)"
    return None


def friendly(fn):
    """Turn the errors a user can cause into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from db.store import StoreError
        from sml_sim.data.base import DataError

        try:
            return fn(*args, **kwargs)
        except (DataError, StoreError, UserError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")  # user paths may hold [brackets]
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: whatever was already stored is kept")  # (the run commands say more)
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `sml-sim runs --json | head`: the reader left; stop quietly
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter flushes it at exit
            raise typer.Exit(141) from None
        except OSError as exc:  # a file the user named cannot be written or read
            where = f": {exc.filename}" if exc.filename else ""
            err.print(f"[bold red]error:[/] {escape(exc.strerror or str(exc))}{escape(where)}")
            raise typer.Exit(2) from None
        except MemoryError:
            err.print("[bold red]error:[/] out of memory (a smaller --scale or dataset, or fewer methods, needs less); "
                      "whatever was already stored is kept")
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            said = store_trouble(exc)
            if said is not None and not os.environ.get("SML_SIM_DEBUG"):
                err.print(f"[bold red]error:[/] {escape(said)}")
                raise typer.Exit(2) from None
            if os.environ.get("SML_SIM_DEBUG"):
                raise
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
                      "(set SML_SIM_DEBUG=1 for the traceback, and please report it)")
            raise typer.Exit(1) from None

    return wrapper


def db_flag(db: str | None) -> str:
    """The --db part of a command we suggest, so that copying the hint reaches the same store."""
    return f" --db {shlex.quote(db)}" if db else ""


def checked_out_path(text: str, db: str | None = None, inputs: tuple = ()) -> Path:
    """--out with ~ expanded, failing before any work when it cannot be written (not hours later,
    after a long run), or when it names the store (``db``) or an input file: writing there would
    destroy it. The caller writes to the path returned, so check and write agree. (Taken as text:
    a Path would drop the trailing / of a folder that does not exist yet, and write a file there.)"""
    if text == "-":  # standard output
        return Path(text)
    if not text.strip():
        raise UserError("--out needs a file name (or - for standard output)")
    path = Path(text).expanduser()
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise UserError(f"--out {text} is a folder; give a file name, e.g. {path / 'results.csv'}")
    refuse_overwriting_inputs(path, db, inputs)
    folder = path.resolve().parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"--out {path}: {folder} {what}")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise UserError(f"--out {path}: not writable")
    return path


def refuse_replacing_other_files(path: Path) -> None:
    """--out replaces an earlier export (its first line starts ``run_id,``, as every export's does) or
    an empty file, never anything else: another store, a scenario or someone's notes would be lost."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        head = f.read(7)
    if head != b"run_id,":
        raise UserError(f"--out {path} exists and is not an sml-sim export; remove it first, or give another name")


def refuse_overwriting_inputs(path: Path, db: str | None, inputs: tuple = (), spec=None, *,
                              complete: bool = False) -> None:
    """--out must not name the results store (or its journal files), the scenario file or the data the
    run reads (``spec``'s file, or any file in its data folder: a reader takes every day file there).
    ``complete``: the last check before writing, which also refuses any other file but an export."""
    from db.store import sqlite_file
    from sml_sim.data import input_paths

    if str(path) == "-":
        return
    target = path.expanduser().resolve()
    store = sqlite_file(db)
    guarded = [(store, "the results store (--db)")] if store is not None else []
    if store is not None:
        guarded += [(store.with_name(store.name + suffix), "the results store's journal") for suffix in ("-wal", "-shm")]
    guarded += [(Path(p).expanduser(), "an input of the run") for p in inputs if p]
    guarded += [(p.expanduser(), "the data the run reads") for p in (input_paths(spec) if spec is not None else [])]
    for other, what in guarded:
        if other.is_dir() and target.is_relative_to(other.resolve()):
            raise UserError(f"--out {path} is inside {other}, the data folder the run reads; give a file elsewhere")
        if other.resolve() == target or (other.exists() and target.exists() and os.path.samefile(other, target)):
            raise UserError(f"--out {path} is {what}; writing the results there would destroy it: give another file")
    if complete:
        refuse_replacing_other_files(path.expanduser())


def stored_spec(config: dict):
    """The dataset spec a stored run was started with (its data paths absolute)."""
    from sml_sim.config import RunConfig

    return RunConfig.from_dict(config).dataset


def absolute_data(data: str | None) -> str | None:
    """--data as an absolute path: a run stores it, and resuming from another folder must find it."""
    return str(Path(data).expanduser().resolve()) if data else data


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.__stderr__.isatty()  # Textual draws on the real stderr


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out.print(f"sml-sim {version('sml-sim')}")
        except PackageNotFoundError:
            out.print("sml-sim (not installed as a package)")
        raise typer.Exit()


@app.callback()
def main_options(
    _version: Annotated[bool, typer.Option("--version", help="Print the version and exit.",
                                           callback=version_callback, is_eager=True)] = False,
) -> None:
    """Simulate a recommender retrained period by period: replay a timestamped dataset into a store,
    retrain SML and the baselines at every period and score each on the next one."""


# ------------------------------------------------------------------ shared options

DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL or SQLite file [default: $SML_SIM_DB "
                                            "or ./sml-sim.db]", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
DataOpt = Annotated[str | None, typer.Option("--data", help="File or folder of the raw data (see `sml-sim datasets`).")]
ScaleOpt = Annotated[float | None, typer.Option("--scale", help="Size of a synthetic stream; 1.0 = the paper's size "
                                                 "[default: the scenario's, else the stream's own, e.g. 0.016 "
                                                 "for synthetic-yelp].", show_default=False)]
PeriodsOpt = Annotated[int | None, typer.Option("--periods", help="Cut into N periods of equal interaction count "
                                                 "[default: the protocol's: 40, or 63 for adressa].",
                                                 show_default=False)]
PeriodLenOpt = Annotated[str | None, typer.Option("--period-length", help="Cut into fixed windows, e.g. 7d, 12h, 1.5d (units s, m, h, d, w; a whole number of seconds).")]
MinUserOpt = Annotated[int | None, typer.Option("--min-user-interactions", help="Drop users with fewer "
                                                 "[default: the protocol's filter, see `sml-sim datasets`].",
                                                 show_default=False)]
MinItemOpt = Annotated[int | None, typer.Option("--min-item-interactions", help="Drop items with fewer "
                                                 "[default: the protocol's filter].", show_default=False)]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Train/validation/test period counts, e.g. 30/3/7 "
                                               "[default: the protocol's, scaled to --periods].", show_default=False)]
StartOpt = Annotated[int | None, typer.Option("--retrain-start", help="First period that is retrained on "
                                               "[default: the protocol's, e.g. 10 of 40].", show_default=False)]
UserColOpt = Annotated[str | None, typer.Option("--user-col", help="csv: user column (name or 0-based index) "
                                                 "[default: user].", show_default=False)]
ItemColOpt = Annotated[str | None, typer.Option("--item-col", help="csv: item column (name or 0-based index) "
                                                 "[default: item].", show_default=False)]
TimeColOpt = Annotated[str | None, typer.Option("--time-col", help="csv: time column (name or 0-based index) "
                                                 "[default: time].", show_default=False)]
TimeFmtOpt = Annotated[str | None, typer.Option("--time-format", help="csv: unix, unix-ms, iso or a strptime "
                                                 "pattern such as %Y%m%d; times without a zone are UTC "
                                                 "[default: unix].", show_default=False)]
DelimOpt = Annotated[str | None, typer.Option("--delimiter", help="csv: field separator, 'tab' for tabs "
                                               "[default: ,].", show_default=False)]
NoHeaderOpt = Annotated[bool, typer.Option("--no-header", help="csv: the file has no header row.")]


def csv_options(user_col, item_col, time_col, time_format, delimiter, no_header) -> dict:
    """The csv flags actually given (the reader has the defaults), so ingest and run agree."""
    opts = {key: value for key, value in (("user_col", user_col), ("item_col", item_col), ("time_col", time_col),
                                          ("time_format", time_format), ("delimiter", delimiter))
            if value is not None}
    if no_header:
        opts["header"] = False
    return opts


def dataset_spec(dataset: str, data, scale, seed, periods, period_length, min_user, min_item, split, start,
                 csv_opts: dict):
    from sml_sim.data import DatasetSpec

    return DatasetSpec(protocol=dataset, data=absolute_data(data), scale=scale, seed=seed, periods=periods,
                       period_length=period_length, min_user_interactions=min_user,
                       min_item_interactions=min_item, split=split, retrain_start=start,
                       csv=csv_opts)  # on another protocol, check_spec refuses them


def load_with_progress(spec, quiet: bool = False, names: dict[str, str] | None = None):
    """Read and cut a dataset, showing a progress bar on stderr while a large file streams in.
    ``names``: flags to name as the scenario file writes them in an error (see ``file_flags``)."""
    from sml_sim.data.base import DataError

    try:
        return _load_with_progress(spec, quiet)
    except DataError as exc:
        if names:
            raise DataError(in_file_terms(str(exc), names)) from None
        raise


def _load_with_progress(spec, quiet: bool):
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from sml_sim.data import load_dataset

    if quiet or not err.is_terminal:
        return load_dataset(spec)
    if spec.protocol.startswith("synthetic-"):  # generated, not read: no bytes to count
        with err.status(f"generating {spec.protocol}..."):
            return load_dataset(spec)
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task(f"reading {spec.protocol}", total=None)
        return load_dataset(spec, progress=lambda done, total: bar.update(task, completed=done, total=total))


def summary_lines(s: dict) -> list[str]:
    lines = [
        f"dataset:       {s['dataset']}",
        f"source:        {s['source']}",
        f"interactions:  {s['interactions']:,}   users: {s['users']:,}   items: {s['items']:,}",
        f"periods:       {s['periods']}   train {s['train']}   validation "
        f"{s['validation'] if s['validation'][0] <= s['validation'][1] else 'none'}   "
        f"test {s['test']}   retraining starts at {s['retrain_start']}",
    ]
    if s.get("skipped_lines"):
        lines.append(f"skipped lines: {s['skipped_lines']}")
    for note in s.get("notes", []):
        lines.append(f"note:          {note}")
    return lines


# ------------------------------------------------------------------ commands


@app.command()
def datasets():
    """List the dataset protocols and where each looks for its data."""
    from sml_sim.data.protocols import PROTOCOLS, default_location

    table = Table(box=None, pad_edge=False)
    table.add_column("dataset", style="bold")
    table.add_column("protocol")
    table.add_column("data")
    for name, p in PROTOCOLS.items():
        where = str(default_location(name)) if name in ("yelp", "adressa", "movielens") else p.default_location
        if name in ("yelp", "adressa"):
            where += " (else synthetic)"
        table.add_row(name, escape(p.description), escape(where))
    out.print(table)
    out.print("Override the data folder root with SML_SIM_DATA, or pass --data PATH.")


@app.command()
@friendly
def ingest(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="yelp, adressa, movielens, csv, synthetic-yelp "
                                           "or synthetic-adressa; or a scenario (a name in scenarios/ or a "
                                           ".toml file): its dataset.")],
    data: DataOpt = None, db: DbOpt = None, scale: ScaleOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of a synthetic stream [default: the "
                                             "scenario's, else 0].", show_default=False)] = None,
    periods: PeriodsOpt = None, period_length: PeriodLenOpt = None, min_user_interactions: MinUserOpt = None,
    min_item_interactions: MinItemOpt = None, split: SplitOpt = None, retrain_start: StartOpt = None,
    user_col: UserColOpt = None, item_col: ItemColOpt = None, time_col: TimeColOpt = None,
    time_format: TimeFmtOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False,
    as_json: JsonOpt = False,
):
    """Load, filter and cut a dataset into periods, and store every period."""
    from db.store import Store, fingerprint
    from sml_sim.data import PROTOCOLS, reads_a_file

    csv_opts = csv_options(user_col, item_col, time_col, time_format, delimiter, no_header)
    names: dict[str, str] = {}
    if dataset in PROTOCOLS:
        spec = dataset_spec(dataset, data, scale, 0 if seed is None else seed, periods, period_length,
                            min_user_interactions, min_item_interactions, split, retrain_start, csv_opts)
    else:  # a scenario's dataset, with the command line's overrides
        cfg = build_config(dataset, data=data, methods=None, seed=seed, device=None, scale=scale, periods=periods,
                           period_length=period_length, min_user=min_user_interactions,
                           min_item=min_item_interactions, split=split, start=retrain_start,
                           csv_opts=csv_opts, data_only=True)
        spec, names = cfg.dataset, cfg.file_flags
    if seed is not None and reads_a_file(spec):  # as --scale: never dropped silently
        raise UserError(f"--seed seeds the synthetic streams; {spec.protocol} data is read from its file as it is "
                        "(the --seed of `run` and `replay` seeds models and sampling)")
    Store.check_location(db)  # a bad --db is said before the data is read
    try:
        ds = load_with_progress(spec, quiet=as_json, names=names)
        store = Store(db)
        store.ingest(ds, fingerprint(ds.params, ds.source))  # one transaction
    except KeyboardInterrupt:
        err.print("interrupted: nothing was stored; the store is as it was")
        raise typer.Exit(130) from None
    summary = ds.summary()
    summary["db"] = store.url
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    for line in summary_lines(summary):
        out.print(escape(line))
    counts = summary["period_interactions"]
    out.print("per period:    " + " ".join(f"{c:,}" for c in counts))
    out.print(f"stored in {escape(store.url)}")


@app.command("periods")
@friendly
def periods_cmd(
    dataset: Annotated[str, typer.Argument(metavar="DATASET_OR_RUN",
                                           help="Name of an ingested dataset (the latest one of that name), "
                                           "a scenario (its dataset), or a run id: that run's dataset (e.g. "
                                           "one of several csv files).")],
    db: DbOpt = None, as_json: JsonOpt = False,
):
    """Show the stored periods of a dataset: split, time range, interactions, new users and items."""
    from datetime import datetime

    from db.store import Store

    store = Store(db, reading=True)
    info = store.latest_dataset(dataset)
    if info is None and dataset.isdigit() and len(dataset) < 19:  # a run id (SQLite integers are 64-bit)
        info = store.dataset(store.run(int(dataset)).dataset_id)
    if info is None and not dataset.isdigit():  # a scenario: the latest copy cut as it says
        from sml_sim.config import load_scenario, scenario_path

        path = scenario_path(dataset)
        if path is not None:
            spec = load_scenario(path).dataset
            info = store.latest_dataset(spec.protocol, like=spec.as_dict())
            from sml_sim.data import PROTOCOLS

            if info is None and dataset not in PROTOCOLS:  # (a protocol's name: said below)
                raise UserError(f"scenario {dataset}'s dataset ({spec.protocol} with its settings) is not in "
                                f"{store.url}; `sml-sim ingest {dataset}{db_flag(db)}` stores it")
    if info is None:
        from sml_sim.data import PROTOCOLS

        hint = f"; run `sml-sim ingest {dataset}{db_flag(db)}` first" if dataset in PROTOCOLS else ""
        raise UserError(f"no dataset {dataset!r} in {store.url}{hint}")
    rows = store.periods(info["id"])
    if as_json:
        print(json.dumps(rows, indent=2))
        return

    def when(ts: int) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")

    out.print(escape(f"{info['dataset']} - source: {info['source']} - {info['interactions']:,} interactions, "
                     f"{info['periods']} periods"))
    if info.get("same_name", 1) > 1:
        out.print(escape(f"(the last ingested or run of {info['same_name']} stored datasets named "
                         f"{info['dataset']!r}; `sml-sim periods RUN_ID` shows a run's)"))
    table = Table(box=None, pad_edge=False)
    for col in ("period", "split", "start (UTC)", "end (UTC)", "interactions", "new users", "new items"):
        table.add_column(col, justify="right" if col not in ("split",) else "left")
    for r in rows:
        table.add_row(str(r["index"]), r["split"], when(r["start"]), when(r["end"]), f"{r['interactions']:,}",
                      f"{r['new_users']:,}", f"{r['new_items']:,}")
    out.print(table)



MethodsOpt = Annotated[str | None, typer.Option("--methods", help="Comma-separated methods, e.g. sml,full,fine,spmf,"
                                                "pop,random (see `sml-sim methods`).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda [default: auto]",
                                               show_default=False)]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="torch CPU threads [default: all cores for run, "
                                                "all but one for replay, so the UI keeps a core; "
                                                "while other work keeps the cores busy, 1 can be much "
                                                "faster].",
                                                show_default=False)]


def build_config(target: str, *, data, methods, seed, device, scale, periods, period_length, min_user, min_item,
                 split, start, csv_opts: dict | None = None, data_only: bool = False, note=None):
    """A scenario file or name, or a dataset protocol, plus the command line's overrides. The
    scenario's notes go to ``note(text)`` (default: stderr) unless --methods makes them moot."""
    from sml_sim.config import RunConfig, load_scenario, scenario_path, validate_methods
    from sml_sim.data import PROTOCOLS, reads_a_file

    path = scenario_path(target)
    if path is not None:
        cfg = load_scenario(path)
    elif target in PROTOCOLS:
        from sml_sim.data import DatasetSpec

        cfg = RunConfig(scenario=target, dataset=DatasetSpec(protocol=target))
    else:
        raise UserError(f"{target!r} is neither a dataset ({', '.join(PROTOCOLS)}) nor a scenario "
                        "(a .toml file or a name in scenarios/)")
    ds = cfg.dataset
    overrides = False
    for key, value in (("data", absolute_data(data)), ("scale", scale), ("periods", periods), ("period_length", period_length),
                       ("min_user_interactions", min_user), ("min_item_interactions", min_item),
                       ("split", split), ("retrain_start", start)):
        if value is not None:
            setattr(ds, key, value)
            overrides = True
    # The two ways to cut replace each other: --period-length on a scenario that sets periods = 10.
    if period_length is not None and periods is None:
        ds.periods = None
    if periods is not None and period_length is None:
        ds.period_length = None
    if csv_opts:  # on another protocol, check_spec refuses them
        ds.csv = {**ds.csv, **csv_opts}
        overrides = True
    if path is not None and ds.seed and reads_a_file(ds):  # as --scale: a file reads the same whatever the seed
        raise UserError(f"{path}: [dataset] seed seeds the synthetic streams; {ds.protocol} data is read from its "
                        "file as it is (to seed models and sampling, set [run] seed)")
    if seed is not None:
        if not 0 <= seed < 2**63:  # (check_spec sees only a synthetic stream's seed)
            raise UserError(f"--seed must be 0 or more and below 2^63, not {seed}")
        cfg.seed = seed
        if not reads_a_file(ds):  # a file reads the same whatever the seed: runs of every seed share one copy
            ds.seed = seed
        overrides = True
    if device is not None:
        if device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device {device!r}: use auto, cpu or cuda")
        cfg.device = device
    if methods is not None:  # `--methods ""` is an error below, not "the scenario's methods"
        cfg.methods = [m.strip() for m in methods.split(",") if m.strip()]
    elif not data_only:
        for text in cfg.notes:
            (note or say_note)(text)
    from sml_sim.data.base import DataError

    try:
        validate_methods(cfg)
    except DataError as exc:
        raise UserError(str(exc)) from None
    from sml_sim.data import check_spec
    from sml_sim.engine import resolve_device

    # Messages name the flags; a value may have come from the scenario file instead: say so.
    origin = f" (settings from {path}{' and the command line' if overrides else ''})" if path else ""
    cfg.file_flags = file_flags(path, {
        "--data": data, "--scale": scale, "--periods": periods, "--period-length": period_length,
        "--min-user-interactions": min_user, "--min-item-interactions": min_item, "--split": split,
        "--retrain-start": start, "--seed": seed,
        **{f"--{key.replace('_', '-')}": (csv_opts or {}).get(key) for key in CSV_FLAG_KEYS}})
    try:
        if not data_only:  # ingest trains nothing: a scenario for a GPU still ingests on a CPU machine
            resolve_device(cfg.device)
    except ValueError as exc:
        raise UserError(f"{exc}{origin if device is None else ''}") from None
    try:
        check_spec(cfg.dataset)  # a bad file or value fails before the store is touched
    except DataError as exc:
        raise DataError(f"{in_file_terms(str(exc), cfg.file_flags)}{origin}") from None
    return cfg


def file_flags(path, given: dict) -> dict[str, str]:
    """For a scenario file: each dataset flag the command line did not give (``given``: flag ->
    value or None), with the name the file writes it under; nothing without a file."""
    if path is None:
        return {}
    return {flag: f"{'[dataset.csv]' if key in CSV_FLAG_KEYS else '[dataset]'} {key}"
            for flag, value in given.items() if value is None for key in [flag[2:].replace("-", "_")]}


def in_file_terms(message: str, names: dict[str, str]) -> str:
    """``message`` with the flags of values that came from the scenario file named as the file
    writes them ("--scale" -> "[dataset] scale")."""
    for flag, name in names.items():
        message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", name, message)
    return message


CSV_FLAG_KEYS = ("user_col", "item_col", "time_col", "time_format", "delimiter")


def refuse_new_settings(ctx: typer.Context, run_id: int, keep: set[str]) -> None:
    """A continued run keeps the settings it started with: refuse what the command line gave beyond
    ``keep`` (parameter names), which it would otherwise silently ignore."""
    given = [param.opts[0] if param.param_type_name == "option" else param.metavar or param.name
             for param in ctx.command.params
             if param.name not in keep and getattr(ctx.get_parameter_source(param.name), "name", "") == "COMMANDLINE"]
    if given:
        raise UserError(f"continuing run {run_id} keeps the settings it started with; "
                        f"drop {', '.join(given)} (or start a new run)")


def names_the_run(target: str, info) -> bool:
    """Whether a scenario named beside --run is the one the run started from, with the same settings
    (then naming it changes nothing; anything else would be silently ignored, so it is refused)."""
    from db.replay import same_settings
    from sml_sim.config import load_scenario, scenario_path
    from sml_sim.data.base import DataError

    try:
        path = scenario_path(target)
        return path is not None and same_settings(info.config, load_scenario(path))
    except DataError:  # not a scenario that loads: not the run's
        return False


MAX_THREADS_PER_CORE = 8


def check_threads(threads: int | None, note=None) -> None:
    """Refuse a thread count below 1; note one above the core count (``note(text)``, default: stderr)."""
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: give 1 or more (leave it out for the default)")
    cores = os.cpu_count() or 1
    if threads is not None and threads > MAX_THREADS_PER_CORE * cores:  # OpenMP fails, or crashes, far above
        raise UserError(f"--threads {threads}: at most {MAX_THREADS_PER_CORE * cores} on {cores} core(s)")
    if threads is not None and threads > cores:
        (note or say_note)(f"--threads {threads} on {cores} core(s): more threads than cores makes training "
                           "slower, not faster")


def say_note(text: str) -> None:
    err.print(f"note: {escape(text)}")


def use_run_threads(info, threads: int | None, note=None) -> tuple[int | None, bool]:
    """Continue a run with the thread count it last ran with (results depend on it), unless --threads
    says otherwise, which is noted (``note(text)``, default: stderr). Returns the count set (None when the run recorded none) and whether
    it is a switch, for ``record_thread_switch`` once the run has been reopened."""
    from db.replay import threads_of

    recorded = threads_of(info.config)
    switched = bool(threads and recorded and threads != recorded)
    if switched:
        first = (info.config.get("threads_before") or [{"threads": recorded}])[0]["threads"]
        (note or say_note)(
            f"run {info.run_id} started with {first} thread{'s' * (first != 1)} and last ran with "
            f"{recorded}; its later periods use {threads}, so its results may differ from an uninterrupted "
            "run's (README: \"Determinism\")" if first != recorded else
            f"run {info.run_id} started with {recorded} thread{'s' * (recorded != 1)}; its later "
            f"periods use {threads}, so its results may differ from an uninterrupted run's (README: "
            "\"Determinism\")")
    chosen = threads or recorded
    set_threads(chosen)
    return chosen, switched


def record_thread_switch(store, run_id: int, threads: int | None, switched: bool) -> None:
    """After the run has been reopened (not refused): keep the new thread count with it."""
    if switched and threads:
        committed = store.committed(run_id)
        store.record_threads(run_id, threads, max(committed.values()) if committed else None)


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


@app.command()
@friendly
def run(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Argument(metavar="DATASET_OR_SCENARIO",
                                                 help="A dataset (see `sml-sim datasets`), a scenario name "
                                                 "(scenarios/NAME.toml) or a .toml file.")] = None,
    data: DataOpt = None, methods: MethodsOpt = None, db: DbOpt = None, device: DeviceOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of data generation, sampling and models "
                                             "[default: the scenario's, else 0].", show_default=False)] = None,
    scale: ScaleOpt = None,
    out_csv: Annotated[str | None, typer.Option("--out", help="Also write the per-period results CSV here.",
                                                metavar="FILE")] = None,
    resume: Annotated[int | None, typer.Option("--resume", help="Continue run RUN_ID from its last committed "
                                               "period, with its own settings.", metavar="RUN_ID")] = None,
    force: Annotated[bool, typer.Option("--force", help="With --resume: continue a run that a process of another "
                                        "machine seems to hold, once you know that process is gone.")] = False,
    periods: PeriodsOpt = None, period_length: PeriodLenOpt = None, min_user_interactions: MinUserOpt = None,
    min_item_interactions: MinItemOpt = None, split: SplitOpt = None, retrain_start: StartOpt = None,
    user_col: UserColOpt = None, item_col: ItemColOpt = None, time_col: TimeColOpt = None,
    time_format: TimeFmtOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False,
    threads: ThreadsOpt = None,
):
    """Replay a dataset headless: retrain every method at every period, score it on the next, and end with a Table-1-style summary."""
    from db.replay import Replay
    from db.store import Store
    from sml_sim.engine import CheckpointError

    check_threads(threads)
    if out_csv is not None:
        if str(out_csv) == "-":
            raise UserError("--out -: the summary goes to standard output; give a file (or use `sml-sim export`)")
        out_csv = checked_out_path(out_csv, db, (data,))
    if resume is not None:
        if target is not None:
            raise UserError("give either DATASET_OR_SCENARIO or --resume RUN_ID, not both")
        refuse_new_settings(ctx, resume, keep={"resume", "db", "threads", "out_csv", "force"})
        store = Store(db, create=False)
        if out_csv is not None:
            refuse_overwriting_inputs(out_csv, db, spec=stored_spec(store.run(resume).config), complete=True)
        switch = (None, False)
        if store.run(resume).status != "finished":
            switch = use_run_threads(store.run(resume), threads)
        if store.run(resume).status == "finished":
            out.print(f"run {resume} is already finished; nothing to do")
            print_summary(store, resume, db)
            write_out_csv(store, resume, out_csv, db)
            exit_if_methods_failed(store, resume)
            return
        replay = Replay.resume(store, resume, take_over=force)
        record_thread_switch(store, resume, *switch)
        out.print(f"resuming run {resume} ({replay.dataset.name}) from period {replay.engine.next_step + 1}")
    else:
        if target is None:
            raise UserError("name a dataset or scenario to run (e.g. `sml-sim run demo`), or --resume RUN_ID")
        if force:
            raise UserError("--force goes with --resume RUN_ID (a new run has no other process to take over from)")
        cfg = build_config(target, data=data, methods=methods, seed=seed, device=device, scale=scale,
                           periods=periods, period_length=period_length, min_user=min_user_interactions,
                           min_item=min_item_interactions, split=split, start=retrain_start,
                           csv_opts=csv_options(user_col, item_col, time_col, time_format, delimiter, no_header))
        if out_csv is not None:  # the data the scenario names, and the scenario file itself
            from sml_sim.config import scenario_path

            refuse_overwriting_inputs(out_csv, db, (scenario_path(target),), spec=cfg.dataset, complete=True)
        set_threads(threads)
        Store.check_location(db)  # a bad --db is said before the data is read, not after
        dataset = load_with_progress(cfg.dataset, names=cfg.file_flags)  # refused before a store is created for it
        store = Store(db)
        replay = Replay.new(store, cfg, dataset=dataset)
    ds = replay.dataset
    import torch

    n = torch.get_num_threads()
    cpu_threads = f" ({n} thread{'s' * (n != 1)})" if replay.engine.device.type == "cpu" else ""
    out.print(f"run {replay.run_id}: {ds.name}   source: [bold]{escape(ds.source)}[/]   "
              f"device: {replay.engine.device}{cpu_threads}")
    out.print(f"methods: {', '.join(replay.config.methods)}   periods: {ds.n_periods} "
              f"(retraining from {ds.split.retrain_start}, test {list(ds.split.test)})")
    for note in ds.notes:  # e.g. malformed lines skipped, a split scaled to --periods
        out.print(f"note: {escape(note)}")
    from sml_sim.evaluation import small_catalogue_note

    if small_catalogue_note(ds.n_items):
        out.print(f"note: {small_catalogue_note(ds.n_items)}")
    try:
        drive_with_progress(replay)
    except KeyboardInterrupt:
        replay.cancel.set()
        replay.interrupted()
        engine = replay.engine
        live = [m for m in engine.retrainers if m not in engine.failed]
        behind = [m for m in live if m not in engine.committed]
        reached = (f" (none yet for {', '.join(behind)})" if behind else
                   f" (every method has them through period {min(engine.committed[m] for m in live)})"
                   if live else "")
        resume_cmd = f"sml-sim run --resume {replay.run_id}{escape(db_flag(db))}"
        unwritten = (f"; {escape(str(out_csv))} was not written: `{resume_cmd} --out "
                     f"{escape(shlex.quote(str(out_csv)))}` writes it at the end, `sml-sim export {replay.run_id} "
                     f"--out FILE{escape(db_flag(db))}` the periods so far" if out_csv is not None else "")
        err.print(f"interrupted: committed periods are kept{reached}; continue with `{resume_cmd}`{unwritten}")
        raise typer.Exit(130) from None
    except CheckpointError as exc:  # the run cannot go on as it was, but it did not fail: left interrupted
        replay.interrupted()
        raise UserError(f"run {replay.run_id} cannot continue: {exc}") from None
    except BaseException as exc:
        replay.interrupted(f"{type(exc).__name__}: {exc}")
        raise
    replay.finish()
    print_summary(store, replay.run_id, db)
    write_out_csv(store, replay.run_id, out_csv, db)
    exit_if_methods_failed(store, replay.run_id)


def exit_if_methods_failed(store, run_id: int) -> None:
    """A run whose methods did not all finish exits 1 (after its summary), so a script can tell."""
    from sml_sim import report

    failed = report.failures(store.results(run_id))
    if failed:
        err.print(f"[bold red]error:[/] run {run_id} finished, but {len(failed)} method(s) failed: "
                  f"{', '.join(sorted(failed))} (their error is in the summary)")
        raise typer.Exit(1)


def wrote(n: int, what: str, path: Path) -> None:
    if n == 1:
        what = what.replace("rows", "row")
    if str(path) == "-":  # the CSV went to standard output: keep it clean
        err.print(f"wrote {n} {what}")
    else:
        out.print(f"wrote {n} {what} to {escape(str(path))}")


def write_out_csv(store, run_id: int, path: Path | None, db: str | None) -> None:
    if path is None:
        return
    try:
        n = export_results(store, run_id, path)
    except OSError as exc:  # checked before the run, but the disk can change in hours
        raise UserError(f"could not write {path} ({exc.strerror}); the results are stored: "
                        f"`sml-sim export {run_id} --out FILE{db_flag(db)}` writes them") from None
    wrote(n, "result rows", path)


def drive_with_progress(replay) -> None:
    """Step the engine with a progress bar: period, method, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sml_sim.engine import MethodResult, MethodStarted
    from sml_sim.engine import Progress as EngineProgress
    from sml_sim.models import fused

    engine = replay.engine
    n_methods = len([m for m in engine.retrainers if m not in engine.failed])
    todo = sum(1 for m in engine.retrainers if m not in engine.failed
               for t in range(engine.committed.get(m, engine.first_step), engine.last_step + 1))
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("retrainings (method x period)"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("pre-training the initial model", total=todo)
        state = {"method": "", "period": engine.next_step}

        def on_event(e) -> None:
            if isinstance(e, MethodStarted):
                state.update(method=e.method, period=e.period)
                bar.update(task, description=f"period {e.period + 1}/{engine.dataset.n_periods - 1}  {e.method:<10}")
            elif isinstance(e, EngineProgress) and e.task == "kernel":
                if e.fraction < 1:
                    text = "building SML's fused CPU kernel (once per machine, about 30 s)"
                    bar.update(task, description=text)
                    if not err.is_terminal:  # no live bar: say it in the log
                        err.print(f"{text} ...")
                elif fused.fallback_note():
                    err.print(f"note: {escape(fused.fallback_note())}")
                elif fused.last_build_seconds is not None:
                    err.print(f"built SML's fused CPU kernel in {fused.last_build_seconds:.0f} s (cached for later runs)")
            elif isinstance(e, EngineProgress) and e.task == "pretrain":
                bar.update(task, description=f"pre-training the initial model {e.fraction:4.0%}")
            elif isinstance(e, MethodResult):
                bar.advance(task)
                if e.status != "ok":
                    err.print(f"[red]{e.method} failed at period {e.period}: {escape(str(e.error))}[/]")
                elif not err.is_terminal:
                    score = f"recall@20 {e.metrics['recall@20']:.4f}" if e.n_cases else "no test cases   "
                    marker = "*" if e.in_sample else " "
                    if e.in_sample and not state.get("legend"):
                        state["legend"] = True
                        err.print("(* in sample: SML's meta step trained on that period; never averaged)")
                    err.print(f"period {e.period:>3} {e.split:<10} {e.method:<10} {score}{marker} "
                              f"retrain {e.retrain_s:.2f}s")

        engine.subscribe(on_event)
        del n_methods
        replay.engine.run()


def print_summary(store, run_id: int, db: str | None = None) -> None:
    from sml_sim import report

    info = store.run(run_id)
    results = store.results(run_id)
    out.print()
    out.print(f"[bold]run {run_id}[/] - {info.dataset} - source: [bold]{escape(info.source)}[/] - "
              f"status: {info.status}")
    for split in ("validation", "test"):
        means = report.split_means(results, split)
        if not means:
            continue
        refs = report.reference_names(info.methods, info.config.get("method_params"))
        best = report.best_method(means, references=refs)
        reference = report.ri_reference(results, info.config.get("method_params")) if split == "test" else None
        ri = report.relative_improvements_shared(results, split, reference) if reference else {}
        title = f"mean over {split} periods"
        if ri:
            title += (f" (RI: relative improvement of {reference} over the method in %, the mean over K = 5, 10, "
                      "20, as in the paper's Table 1)")
            partial = sorted(m for m, row in ri.items() if row["periods"] < means[m]["periods"]
                             or row["periods"] < means[reference]["periods"])
            if partial:
                title += f"; for {', '.join(partial)}, over the periods both have scored"
        table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        table.add_column("method", style="bold")
        columns = report.TABLE_METRICS + ["full_recall@20", "full_ndcg@20"]
        for k in columns:
            table.add_column(k.replace("recall", "R").replace("ndcg", "N").replace("full_", "full "),
                             justify="right")
            if ri and k in ("recall@20", "ndcg@20"):
                table.add_column(f"RI {k[0].upper()}", justify="right")
        table.add_column("retrain_s", justify="right")
        for method in sorted(means, key=lambda m: -means[m]["recall@20"]):
            m = means[method]
            cells = []
            for k in columns:
                cells.append(f"{m[k]:.4f}")
                if ri and k in ("recall@20", "ndcg@20"):
                    value = ri.get(method, {}).get(k.split("@")[0])
                    cells.append("" if value is None else "-" if value != value else f"{value:+.1f}")
            table.add_row(method, *cells, f"{m['retrain_s']:.2f}", style="green" if method == best else None)
        out.print(table)
        if split == "test":
            span = report.case_count_range(results, split)
            if span is not None and span[1] > 1.25 * span[0]:  # periods of unequal weight: the other mean differs
                weighted = report.split_means(results, split, by_cases=True)
                shown = ", ".join(f"{m} {weighted[m]['recall@20']:.4f}"
                                  for m in sorted(weighted, key=lambda m: -weighted[m]["recall@20"]))
                out.print(f"note: the test periods hold {span[0]:,} to {span[1]:,} cases; weighted by their cases "
                          f"(as the authors' code averages) instead of equally, Recall@20 is {shown}")
            ranks = list(store.case_ranks(run_id))
            few = report.few_candidates_share(ranks, results, split)
            if few is not None and few >= 0.01:
                out.print(f"note: {few:.1%} of the test cases have 20 candidates or fewer (few items seen so far "
                          "that their user has not interacted with): they are hits at 20 whatever the method, "
                          "which lifts every method's Recall@20 and NDCG@20")
            bd = report.breakdown(ranks, results, split)
            if bd:
                groups = [f"{u} user x {i} item" for u, i in report.GROUPS]
                t3 = Table(title="test Recall@20 by old/new user x old/new item (all test periods' cases pooled; "
                           "cases in brackets)", title_justify="left",
                           box=None, pad_edge=False)
                t3.add_column("method", style="bold")
                for g in groups:
                    t3.add_column(g, justify="right")
                for method, row in bd.items():
                    t3.add_row(method, *["-" if row[g][0] is None else f"{row[g][0]:.4f} ({row[g][1]})"
                                         for g in groups])
                out.print(t3)
                share = report.new_item_share(bd)
                if share is not None and share > 0.5:
                    out.print(f"note: {share:.0%} of the test cases are new items; the sampled candidates hold only "
                              "the new items someone reads in the scored period, which favours ranking new items "
                              "high (README: \"Which items are candidates\"; `--methods fresh` measures it)")
    for method, (period, error) in report.failures(results).items():
        out.print(f"[red]{method} failed at period {period}[/]: {escape(error)} (means above, if any, "
                  "cover only its periods before)")
    if info.status != "finished":
        out.print(f"run not finished: continue with `sml-sim run --resume {run_id}{escape(db_flag(db))}`")


def export_results(store, run_id: int, path: Path) -> int:
    from sml_sim import report

    info = store.run(run_id)
    return report.write_results_csv(path, report.ExportMeta(run_id, info.dataset, info.source, info.scenario,
                                                            info.seed), store.results(run_id))


@app.command()
@friendly
def replay(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="DATASET_OR_SCENARIO",
                                          help="A dataset, a scenario name or a .toml file.")] = "demo",
    data: DataOpt = None, methods: MethodsOpt = None, db: DbOpt = None, device: DeviceOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of data generation, sampling and models "
                                             "[default: the scenario's, else 0].", show_default=False)] = None,
    scale: ScaleOpt = None,
    run_id: Annotated[int | None, typer.Option("--run", "--resume", help="Continue this run.", metavar="RUN_ID")] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new run even if one with the same settings exists (by "
                                               "default replay reopens it: an unfinished run continues, a "
                                               "finished one is shown).")] = False,
    periods: PeriodsOpt = None, period_length: PeriodLenOpt = None, min_user_interactions: MinUserOpt = None,
    min_item_interactions: MinItemOpt = None, split: SplitOpt = None, retrain_start: StartOpt = None,
    user_col: UserColOpt = None, item_col: ItemColOpt = None, time_col: TimeColOpt = None,
    time_format: TimeFmtOpt = None, delimiter: DelimOpt = None, no_header: NoHeaderOpt = False,
    threads: ThreadsOpt = None,
    force: Annotated[bool, typer.Option("--force", help="With --run: open a run that a process of another machine "
                                        "seems to hold, once you know that process is gone.")] = False,
):
    """Open the live TUI: step through periods, watch metrics and retraining times, export CSV."""
    from db.store import Store, store_exists

    if run_id is not None and new:
        raise UserError("give --run RUN_ID or --new, not both")
    if force and run_id is None:
        raise UserError("--force goes with --run RUN_ID (a new run has no other process to take over from)")
    if not has_terminal():
        raise UserError("replay is the interactive UI and needs a terminal; `sml-sim run` replays headless")
    notes: list[str] = []  # shown in the replay's log: the screen would hide them on stderr
    check_threads(threads, notes.append)
    cfg = None
    if run_id is None:
        cfg = build_config(target, data=data, methods=methods, seed=seed, device=device, scale=scale,
                           periods=periods, period_length=period_length, min_user=min_user_interactions,
                           min_item=min_item_interactions, split=split, start=retrain_start,
                           csv_opts=csv_options(user_col, item_col, time_col, time_format, delimiter, no_header),
                           note=notes.append)
        store = None
        if not new and store_exists(db):
            # Reopening the same replay reopens its last run: an unfinished one continues, a finished
            # one is shown as it ended (--new starts another). One another process drives is left
            # alone, and so is one whose data file has changed since (it could not be reopened).
            from db.replay import same_settings

            store = Store(db)
            same = [r for r in store.runs() if r.status != "running" and same_settings(r.config, cfg)
                    and store.data_unchanged(r.dataset_id)]
            if same:
                run_id = same[-1].run_id
                cfg = None
    else:
        store = Store(db, create=False)
        info = store.run(run_id)  # a run that is not there is said first
        refuse_new_settings(ctx, run_id, keep={"run_id", "db", "threads", "force"} | ({"target"} if names_the_run(target, info)
                                                                            else set()))
    switch = (None, False)
    if run_id is not None:
        if store.run(run_id).status != "finished":  # a finished one is only shown
            switch = use_run_threads(store.run(run_id), threads, notes.append)
            threads = switch[0] or threads
    # A new run: unusable data (nothing left after filtering, ...) is refused here, before the UI opens
    # and before a store is created for it.
    if store is None:
        Store.check_location(db)
    dataset = load_with_progress(cfg.dataset, names=cfg.file_flags) if cfg is not None else None
    store = store or Store(db)
    from app.tui import run_replay_app

    outcome = run_replay_app(store=store, config=cfg, run_id=run_id, threads=threads, dataset=dataset,
                             notes=notes, take_over=force)
    if outcome.run_id is not None and outcome.run_id == run_id and not outcome.view_only:  # reopened, not refused
        record_thread_switch(store, run_id, *switch)
    if outcome.run_id is None:
        if outcome.error:
            raise UserError(f"the replay could not open: {outcome.error}")
        out.print("closed before the run started; nothing was recorded")
        return
    if outcome.finished:
        out.print(f"run {outcome.run_id} finished; `sml-sim export {outcome.run_id} --out FILE"
                  f"{escape(db_flag(db))}` writes its results")
    elif outcome.view_only:
        out.print(f"run {outcome.run_id} was shown, not continued: {escape(outcome.view_only)}")
    else:
        out.print(f"run {outcome.run_id}: every committed period is kept; continue with "
                  f"`sml-sim replay --run {outcome.run_id}{escape(db_flag(db))}`")
    if outcome.exported_to is not None:
        path = escape(str(outcome.exported_to))
        if outcome.export_outdated:
            out.print(f"results up to period {outcome.exported_through} were exported to {path}; later periods "
                      f"are not in it: `sml-sim export {outcome.run_id} --out FILE{escape(db_flag(db))}` writes them all")
        else:
            out.print(f"results exported to {path} (every committed period, up to {outcome.exported_through})")
    if outcome.error:  # a failure inside the run, not the user's input: exit 1
        err.print(f"[bold red]error:[/] run {outcome.run_id} stopped: {escape(outcome.error)}")
        raise typer.Exit(1)


@app.command()
@friendly
def runs(
    run_id: Annotated[int | None, typer.Argument(metavar="RUN_ID", help="Show this run whole: its settings "
                                                 "and its summary.")] = None,
    db: DbOpt = None, as_json: JsonOpt = False,
):
    """List the runs in the store (id, dataset, source, methods, status, the last period every method has
    committed), or show one."""
    from db.store import DEFAULT_DB_FILE, Store

    if run_id is not None:
        show_run(Store(db, reading=True), run_id, db, as_json)
        return
    if db is None and not os.environ.get("SML_SIM_DB") and not Path(DEFAULT_DB_FILE).exists():
        rows = []  # no store in this folder yet: nothing was run here
    else:
        rows = Store(db, reading=True).runs()
    if as_json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        out.print(f"no runs yet: try `sml-sim run demo{escape(db_flag(db))}`")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("run", "dataset", "source", "methods", "status", "last period (all methods)", "started"):
        table.add_column(col)
    for r in rows:
        status = r.status + (f" ({', '.join(r.failed_methods)} failed)" if r.failed_methods else "")
        table.add_row(str(r.run_id), r.dataset, escape(r.source), ",".join(r.methods), escape(status),
                      "-" if r.last_period is None else str(r.last_period), r.started_at)
    out.print(table)


def _no_nan(value):
    """JSON has no NaN: an undefined figure (an RI over a zero baseline) is written as null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def show_run(store, run_id: int, db: str | None, as_json: bool) -> None:
    """One run's settings as it recorded them (dataset cut, methods and their settings, seed, device,
    threads), then its summary."""
    info = store.run(run_id)
    config = info.config
    if as_json:
        from sml_sim import report

        results = store.results(run_id)
        reference = report.ri_reference(results, config.get("method_params"))
        summary = {}
        for split in ("validation", "test"):
            means = report.split_means(results, split)
            summary[split] = {"means": means, "case_weighted_means": report.split_means(results, split, by_cases=True),
                              "ri_reference": reference,
                              "ri": report.relative_improvements_shared(results, split, reference) if reference else {}}
        data = {k: v for k, v in store.dataset(info.dataset_id).items() if k not in ("params", "id")}
        doc = {**info.as_dict(), "config": config, "data": data, "summary": summary,
               "failures": {m: {"period": p, "error": e} for m, (p, e) in report.failures(results).items()}}
        print(json.dumps(_no_nan(doc), indent=2, default=str, allow_nan=False))
        return
    from db.replay import threads_of

    dataset = config.get("dataset", {})
    shown = {**{k: v for k, v in dataset.items() if k != "csv"}, **dataset.get("csv", {})}
    given = ", ".join(f"{k} {v}" for k, v in shown.items()
                      if v not in (None, {}, "") and k not in ("protocol", "seed", "data"))
    stored = store.dataset(info.dataset_id)
    sp = stored["split"]
    threads = threads_of(config)
    if threads and config.get("threads_before"):
        before = "; ".join(f"{b['threads']}" + (f" through period {b['until_period']}" if b["until_period"] is not None
                                                 else " before") for b in config["threads_before"])
        threads = f"{threads} ({before})"
    out.print(f"[bold]run {run_id}[/]: {info.dataset} - source: {escape(info.source)} - status: {info.status}"
              f" - last period: {'-' if info.last_period is None else info.last_period}")
    out.print(escape(f"scenario: {info.scenario}   seed: {info.seed}   device: {info.device}"
                     + (f"   threads: {threads}" if threads else "") + f"   started: {info.started_at}"))
    def span(a_b) -> str:
        return "none" if a_b[0] > a_b[1] else str(a_b[0]) if a_b[0] == a_b[1] else f"{a_b[0]}-{a_b[1]}"

    out.print(escape(f"data: {stored['interactions']:,} interactions, {stored['users']:,} users, {stored['items']:,} "
                     f"items; {stored['periods']} periods: train {span(sp['train'])}, validation "
                     f"{span(sp['validation'])}, test {span(sp['test'])}, retraining from {sp['retrain_start']}"
                     + (f" (set: {given})" if given else "")))
    for note in stored["notes"]:
        out.print(f"note: {escape(note)}")
    from sml_sim.retrainers import scenario_params

    params = config.get("method_params", {})
    for method in info.methods:  # with what an ablation takes from its method's section and its preset
        settings = ", ".join(f"{k} = {v}" for k, v in scenario_params(method, params).items())
        out.print(escape(f"  {method}: {settings or 'method defaults'}"))
    if config.get("pretrain"):
        out.print(escape("  pre-training: " + ", ".join(f"{k} = {v}" for k, v in config["pretrain"].items())))
    print_summary(store, run_id, db)


@app.command()
@friendly
def export(
    run_id: Annotated[int, typer.Argument(metavar="RUN_ID", help="The run to export (see `sml-sim runs`).")],
    out_text: Annotated[str, typer.Option("--out", help="CSV file to write; - for standard output.",
                                          metavar="FILE")],
    cases: Annotated[bool, typer.Option("--cases", help="One row per scored case (every period and method, "
                                        "with its split): the user and item (dense ids and the data's own ids) "
                                        "and its 0-based ranks (0 = first; a hit at K is a rank below K) "
                                        "instead.")] = False,
    filters: Annotated[bool, typer.Option("--filters", help="SML's learned first-layer transfer filters "
                                          "(paper Figure 7) for the last period.")] = False,
    db: DbOpt = None,
):
    """Write a run's results (or its per-case ranks, or SML's filters) as CSV."""
    from db.store import Store
    from sml_sim import report

    if cases and filters:
        raise UserError("give --cases or --filters, not both")
    out_path = checked_out_path(out_text, db)
    store = Store(db, reading=True)
    run = store.run(run_id)  # clear error when the run does not exist
    refuse_overwriting_inputs(out_path, db, spec=stored_spec(run.config), complete=True)
    if cases:
        raw_ids = store.raw_ids(run.dataset_id)
        n = report.write_cases_csv(out_path, run_id, store.case_ranks(run_id), store.results(run_id), raw_ids)
        wrote(n, "case rows", out_path)
        if raw_ids is None:
            err.print("note: raw_user and raw_item are empty: this run's data was stored by an earlier sml-sim, "
                      "which kept only the dense ids; ingesting the same data into this store again adds them")
    elif filters:
        try:
            n = report.write_filters_csv(out_path, run_id, store.results(run_id))
        except ValueError as exc:
            raise UserError(f"run {run_id}: {exc}") from None
        wrote(n, "filter rows", out_path)
    else:
        n = export_results(store, run_id, out_path)
        wrote(n, "result rows", out_path)
    if run.status != "finished":  # to stderr: a CSV on standard output stays clean
        last = "" if run.last_period is None else f" through period {run.last_period}"
        err.print(f"note: run {run_id} is {run.status}, so this holds its periods{last} only")


@app.command()
@friendly
def delete(
    run_id: Annotated[int, typer.Argument(metavar="RUN_ID", help="The run to remove (see `sml-sim runs`).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask (needed without a terminal).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Remove a run recorded as running by another machine's "
                                        "process (which this one cannot see).")] = False,
    db: DbOpt = None,
):
    """Remove a run: its results, ranks and checkpoints (the stored dataset stays). Export it first to keep it."""
    import shutil

    from db.replay import checkpoint_root
    from db.store import Store

    store = Store(db, create=False)
    info = store.run(run_id)  # clear error when the run does not exist
    folder = checkpoint_root(store) / f"run-{run_id}"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0
    what = (f"run {run_id} ({info.dataset}, {', '.join(info.methods)}; {info.status}, last period "
            f"{'-' if info.last_period is None else info.last_period})"
            + (f" and its checkpoints ({size / 2**20:.1f} MB)" if size else ""))
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"this would remove {what}; add --yes to confirm")
        try:
            sure = typer.confirm(f"remove {what}?", default=False)
        except typer.Abort:  # Ctrl-D or Ctrl-C at the question
            err.print("\nnothing removed")
            raise typer.Exit(1) from None
        if not sure:
            out.print("nothing removed")
            return
    store.delete_run(run_id, force=force)
    shutil.rmtree(folder, ignore_errors=True)
    for empty in (folder.parent, folder.parent.parent):  # the store's, then the shared checkpoint folder
        with contextlib.suppress(OSError):
            empty.rmdir()  # only when nothing else is left in it
    out.print(escape(f"removed {what}"))


@app.command()
@friendly
def methods(
    name: Annotated[str | None, typer.Argument(metavar="METHOD",
                                               help="Show this method's settings and their defaults.")] = None,
):
    """List the retraining methods usable in --methods and scenarios, or one method's settings."""
    from sml_sim.retrainers import METHODS, allowed_values, toml_text

    if name is None:
        table = Table(box=None, pad_edge=False)
        table.add_column("method", style="bold")
        table.add_column("what it does")
        for method, (_, _, desc) in METHODS.items():
            table.add_row(method, escape(desc))
        out.print(table)
        out.print(escape("`sml-sim methods METHOD` lists a method's settings (a scenario's [methods.METHOD] keys)."))
        return
    if name not in METHODS:
        from sml_sim.suggest import did_you_mean

        raise UserError(f"unknown method {name!r}{did_you_mean(name, METHODS)}; known: {', '.join(METHODS)}")
    cls, preset, desc = METHODS[name]
    out.print(f"[bold]{name}[/]: {escape(desc)}")
    if not cls.defaults:
        out.print("no settings")
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("setting", style="bold")
    table.add_column("default", justify="right")
    table.add_column("allowed")
    table.add_column("meaning")
    for key, default in cls.defaults.items():
        value = preset.get(key, default)
        shown = toml_text(value) if isinstance(value, bool | str) else str(value)  # as a scenario writes it
        allowed = allowed_values(key, default, cls.choices.get(key))
        table.add_row(key, escape(shown + (" (this variant)" if key in preset else "")), escape(allowed),
                      escape(cls.meanings.get(key, "")))
    out.print(table)


# click's UsageError (typer vendors click in recent releases; BadParameter derives from it either way)
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def unknown_option_message(name: str, ctx) -> str:
    """An option this command lacks: which commands have it, or the close spellings it does have.
    (click's own suggestion is loose: --threads on ingest suggested --no-header.)"""
    import difflib

    def options(command) -> list[str]:
        return [o for param in command.params for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]

    group = ctx.find_root().command
    here = ctx.command
    elsewhere = [cmd_name for cmd_name, cmd in getattr(group, "commands", {}).items()
                 if cmd is not here and name in options(cmd)]
    if elsewhere and here is not group:
        names = sorted(elsewhere)
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        return f"{name} is an option of {listed}, not of {ctx.info_name}"
    close = difflib.get_close_matches(name, options(here), n=3, cutoff=0.75)
    return f"no such option: {name}" + (f" (did you mean {' or '.join(close)}?)" if close else "")


def _interrupt_once(_signum, _frame) -> None:
    """Ctrl-C: stop, as Python's own handler does, but ignore further presses, which would otherwise
    break the cleanup that records the run as interrupted (a traceback, and exit -2 instead of 130)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not where SIGINT is ignored)
        signal.signal(signal.SIGINT, _interrupt_once)
    try:
        code = app(standalone_mode=False, prog_name="sml-sim")  # click returns a command's exit code instead of exiting
    except _USAGE_ERROR as exc:  # a wrong option or value: one line, as every other bad input
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `sml-sim`: the help, as click shows it
            sys.stderr.write(exc.format_message() + "\n")
            sys.exit(2)
        where = exc.ctx.command_path if exc.ctx is not None else "sml-sim"
        command = sys.argv[1] if len(sys.argv) > 1 else None  # (an option before it is the group's own)
        if where == "sml-sim" and command in {c.name or c.callback.__name__ for c in app.registered_commands}:
            where = f"sml-sim {command}"  # (an option's missing value is raised in the group's context)
        message = exc.format_message()
        if type(exc).__name__ == "NoSuchOption" and exc.ctx is not None:
            message = unknown_option_message(exc.option_name, exc.ctx)
        err.print(f"[bold red]error:[/] {escape(message)} (`{escape(where)} -h` lists the options)")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C at a prompt, or before a command's own handling
        err.print("interrupted")
        sys.exit(130)
    except BrokenPipeError:  # e.g. `sml-sim runs | head`
        sys.stderr.close()
        sys.exit(141)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

