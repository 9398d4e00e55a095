"""The `sml-sim` command line (Typer). Thin: it parses, calls sml_sim and db, and prints.

Every expected failure (bad input, unknown run, unusable store) ends as one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="sml-sim",
    help="Simulate a recommender retrained period by period: replay a timestamped dataset into a store, "
    "retrain SML and the baselines at every period and score each on the next one.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
# Piped output keeps long lines whole (no wrapping at 80 columns) so it stays greppable.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


class UserError(Exception):
    pass


def friendly(fn):
    """Turn the errors a user can cause into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from db.store import StoreError
        from sml_sim.data.base import DataError

        try:
            return fn(*args, **kwargs)
        except (DataError, StoreError, UserError) as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: every committed period is kept")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if os.environ.get("SML_SIM_DEBUG"):
                raise
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
                      "(set SML_SIM_DEBUG=1 for the traceback, and please report it)")
            raise typer.Exit(1) from None

    return wrapper


# ------------------------------------------------------------------ shared options

DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL or SQLite file [default: $SML_SIM_DB "
                                            "or ./sml-sim.db]", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
DataOpt = Annotated[str | None, typer.Option("--data", help="File or folder of the raw data (see `sml-sim datasets`).")]
ScaleOpt = Annotated[float | None, typer.Option("--scale", help="Size of a synthetic stream; 1.0 = the paper's size.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the synthetic stream, sampling and models.")]
PeriodsOpt = Annotated[int | None, typer.Option("--periods", help="Cut into N periods of equal interaction count.")]
PeriodLenOpt = Annotated[str | None, typer.Option("--period-length", help="Cut into fixed windows, e.g. 7d, 12h.")]
MinUserOpt = Annotated[int | None, typer.Option("--min-user-interactions", help="Drop users with fewer.")]
MinItemOpt = Annotated[int | None, typer.Option("--min-item-interactions", help="Drop items with fewer.")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Train/validation/test period counts, e.g. 30/3/7.")]
StartOpt = Annotated[int | None, typer.Option("--retrain-start", help="First period that is retrained on.")]
UserColOpt = Annotated[str, typer.Option("--user-col", help="csv: user column (name or 0-based index).")]
ItemColOpt = Annotated[str, typer.Option("--item-col", help="csv: item column (name or 0-based index).")]
TimeColOpt = Annotated[str, typer.Option("--time-col", help="csv: time column (name or 0-based index).")]
TimeFmtOpt = Annotated[str, typer.Option("--time-format", help="csv: unix, unix-ms, iso or a strptime format.")]
DelimOpt = Annotated[str, typer.Option("--delimiter", help="csv: field separator (use 'tab' for tabs).")]
NoHeaderOpt = Annotated[bool, typer.Option("--no-header", help="csv: the file has no header row.")]


def dataset_spec(dataset: str, data, scale, seed, periods, period_length, min_user, min_item, split, start,
                 user_col="user", item_col="item", time_col="time", time_format="unix", delimiter=",",
                 no_header=False):
    from sml_sim.data import DatasetSpec

    csv_opts = {}
    if dataset == "csv":
        csv_opts = {"user_col": user_col, "item_col": item_col, "time_col": time_col,
                    "time_format": time_format, "delimiter": delimiter, "header": not no_header}
    return DatasetSpec(protocol=dataset, data=data, scale=scale, seed=seed, periods=periods,
                       period_length=period_length, min_user_interactions=min_user,
                       min_item_interactions=min_item, split=split, retrain_start=start, csv=csv_opts)


def load_with_progress(spec, quiet: bool = False):
    """Read and cut a dataset, showing a progress bar on stderr while a large file streams in."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from sml_sim.data import load_dataset

    if quiet or not err.is_terminal:
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
        f"periods:       {s['periods']}   train {s['train']}   validation {s['validation']}   "
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
        table.add_row(name, p.description, where)
    out.print(table)
    out.print("Override the data folder root with SML_SIM_DATA, or pass --data PATH.")


@app.command()
@friendly
def ingest(
    dataset: Annotated[str, typer.Argument(help="yelp, adressa, movielens, csv, synthetic-yelp or synthetic-adressa.")],
    data: DataOpt = None, db: DbOpt = None, scale: ScaleOpt = None, seed: SeedOpt = 0,
    periods: PeriodsOpt = None, period_length: PeriodLenOpt = None, min_user_interactions: MinUserOpt = None,
    min_item_interactions: MinItemOpt = None, split: SplitOpt = None, retrain_start: StartOpt = None,
    user_col: UserColOpt = "user", item_col: ItemColOpt = "item", time_col: TimeColOpt = "time",
    time_format: TimeFmtOpt = "unix", delimiter: DelimOpt = ",", no_header: NoHeaderOpt = False,
    as_json: JsonOpt = False,
):
    """Load, filter and cut a dataset into periods, and store every period."""
    from db.store import Store, fingerprint

    spec = dataset_spec(dataset, data, scale, seed, periods, period_length, min_user_interactions,
                        min_item_interactions, split, retrain_start, user_col, item_col, time_col,
                        time_format, delimiter, no_header)
    ds = load_with_progress(spec, quiet=as_json)
    store = Store(db)
    dataset_id = store.register_dataset(ds, fingerprint(spec.as_dict()))
    store.write_periods(dataset_id, ds, range(ds.n_periods))
    summary = ds.summary()
    summary["db"] = store.url
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    for line in summary_lines(summary):
        out.print(line)
    counts = summary["period_interactions"]
    out.print("per period:    " + " ".join(f"{c:,}" for c in counts))
    out.print(f"stored in {store.url}")


@app.command("periods")
@friendly
def periods_cmd(
    dataset: Annotated[str, typer.Argument(help="Name of an ingested dataset (the latest one of that name).")],
    db: DbOpt = None, as_json: JsonOpt = False,
):
    """Show the stored periods of a dataset: split, time range, interactions, new users and items."""
    from datetime import datetime, timezone

    from db.store import Store

    store = Store(db)
    info = store.latest_dataset(dataset)
    if info is None:
        raise UserError(f"no dataset {dataset!r} in {store.url}; run `sml-sim ingest {dataset}` first")
    rows = store.periods(info["id"])
    if as_json:
        print(json.dumps(rows, indent=2))
        return

    def when(ts: int) -> str:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")

    out.print(f"{info['dataset']} - source: {info['source']}")
    table = Table(box=None, pad_edge=False)
    for col in ("period", "split", "start (UTC)", "end (UTC)", "interactions", "new users", "new items"):
        table.add_column(col, justify="right" if col not in ("split",) else "left")
    for r in rows:
        table.add_row(str(r["index"]), r["split"], when(r["start"]), when(r["end"]), f"{r['interactions']:,}",
                      f"{r['new_users']:,}", f"{r['new_items']:,}")
    out.print(table)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # e.g. `sml-sim runs | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()

__all__ = ["app", "main", "Path"]
