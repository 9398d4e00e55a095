"""The command-line contract: runs/export/datasets/methods/--help, the exported columns, and the
metrics recomputed from the exported cases."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from app.cli import app
from sml_sim.evaluation import metrics_from_ranks
from tests.conftest import interrupted_run

RESULT_COLUMNS = ("run_id,dataset,source,scenario,seed,method,period,split,n_cases,recall@5,recall@10,recall@20,ndcg@5,ndcg@10,"
                  "ndcg@20,full_recall@20,full_ndcg@20,retrain_s,eval_s").split(",")
CASE_COLUMNS = ("run_id,method,period,split,in_sample,user,item,raw_user,raw_item,sampled_rank,full_rank,user_type,"
                "item_type").split(",")
METHODS = ["full", "fine", "spmf", "pop", "random"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, scenario_writer):
    """One tiny run through `sml-sim run`, shared by the tests of this module."""
    import torch

    folder = tmp_path_factory.mktemp("cli-run")
    toml = scenario_writer(folder, "clirun", periods=8, split="5/1/2", retrain_start=2)
    db = f"sqlite:///{folder}/run.db"
    before = torch.get_num_threads()
    try:
        r = CliRunner().invoke(app, ["run", str(toml), "--db", db, "--threads", "1", "--out",
                                     str(folder / "out.csv")])
    finally:
        torch.set_num_threads(before)
    assert r.exit_code == 0, r.stderr + r.stdout
    return {"db": db, "folder": folder, "stdout": r.stdout, "stderr": r.stderr}


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_prints_summary(finished_run):
    out = finished_run["stdout"]
    assert "source: csv (" in out
    assert "mean over test periods" in out
    assert "relative improvement" in out
    assert "old user x old item" in out
    for m in METHODS:
        assert m in out
    assert "status: finished" in out


def test_runs_json_keys(cli, finished_run):
    r = cli("runs", "--db", finished_run["db"], "--json")
    assert r.exit_code == 0, r.stderr
    runs = json.loads(r.stdout)
    assert len(runs) == 1
    run = runs[0]
    assert {"run_id", "dataset", "source", "methods", "status", "last_period"} <= set(run)
    assert run["run_id"] == 1 and run["dataset"] == "csv" and run["methods"] == METHODS
    assert run["status"] == "finished" and run["last_period"] == 7
    assert run["source"].startswith("csv (")
    r = cli("runs", "--db", finished_run["db"])
    assert r.exit_code == 0 and "finished" in r.stdout


def test_export_results_columns(cli, finished_run, tmp_path):
    out = tmp_path / "r.csv"
    r = cli("export", "1", "--out", out, "--db", finished_run["db"])
    assert r.exit_code == 0, r.stderr
    rows = _read_csv(out)
    assert set(RESULT_COLUMNS) <= set(rows[0])
    assert len(rows) == len(METHODS) * 5  # periods 3..7
    assert {r["method"] for r in rows} == set(METHODS)
    assert sorted({int(r["period"]) for r in rows}) == [3, 4, 5, 6, 7]
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    for row in rows:
        assert row["run_id"] == "1" and row["dataset"] == "csv"
        assert row["scenario"] == "clirun" and row["seed"] == "0"  # concatenated runs stay told apart
        for k in RESULT_COLUMNS[9:]:
            float(row[k])
        assert 0 <= float(row["recall@5"]) <= float(row["recall@10"]) <= float(row["recall@20"]) <= 1
    # --out on `run` wrote the same results
    assert _strip_timings(_read_csv(finished_run["folder"] / "out.csv")) == _strip_timings(rows)


def _strip_timings(rows):
    return [{k: v for k, v in r.items() if k not in ("retrain_s", "eval_s")} for r in rows]


def test_export_cases_columns_and_recomputed_metrics(cli, finished_run, tmp_path):
    res, cases = tmp_path / "r.csv", tmp_path / "c.csv"
    assert cli("export", "1", "--out", res, "--db", finished_run["db"]).exit_code == 0
    r = cli("export", "1", "--out", cases, "--cases", "--db", finished_run["db"])
    assert r.exit_code == 0, r.stderr
    case_rows = _read_csv(cases)
    with open(cases) as f:
        assert next(csv.reader(f)) == CASE_COLUMNS
    groups = defaultdict(lambda: ([], []))
    for c in case_rows:
        assert c["user_type"] in ("old", "new") and c["item_type"] in ("old", "new")
        s, fr = int(c["sampled_rank"]), int(c["full_rank"])
        assert s >= 0 and fr >= 0
        g = groups[(c["method"], int(c["period"]))]
        g[0].append(s)
        g[1].append(fr)
    results = {(r["method"], int(r["period"])): r for r in _read_csv(res)}
    assert set(groups) == set(results)
    for c in case_rows:  # each case row carries its period's split, as the results do
        row = results[(c["method"], int(c["period"]))]
        assert (c["split"], c["in_sample"]) == (row["split"], row["in_sample"])
    with open(cases, "rb") as f:
        assert b"\r\n" not in f.read()
    for key, (sampled, full) in groups.items():
        row = results[key]
        assert len(sampled) == int(row["n_cases"])
        m = metrics_from_ranks(np.array(sampled), np.array(full))
        for k in ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "full_recall@20",
                  "full_ndcg@20"):
            assert float(row[k]) == pytest.approx(m[k], abs=1e-6), (key, k)
    # every method was scored on the same cases (shared by all methods)
    by_period = defaultdict(dict)
    for c in case_rows:
        by_period[(int(c["period"]))].setdefault(c["method"], []).append((c["user"], c["item"], c["user_type"],
                                                                           c["item_type"]))
    for period, per_method in by_period.items():
        first = next(iter(per_method.values()))
        assert all(v == first for v in per_method.values()), period


def test_exported_cases_name_the_files_own_ids(cli, finished_run, tmp_path):
    """raw_user / raw_item map every case back to an interaction of the csv (ids "u7", "i42")."""
    cases = tmp_path / "c.csv"
    assert cli("export", "1", "--out", cases, "--cases", "--db", finished_run["db"]).exit_code == 0
    with open(finished_run["folder"] / "clirun.csv") as f:
        pairs = {(r["user"], r["item"]) for r in csv.DictReader(f)}
    raw_of_user, raw_of_item = {}, {}
    for c in _read_csv(cases):
        assert (c["raw_user"], c["raw_item"]) in pairs
        # one raw id per dense id and back
        assert raw_of_user.setdefault(c["user"], c["raw_user"]) == c["raw_user"]
        assert raw_of_item.setdefault(c["item"], c["raw_item"]) == c["raw_item"]
    assert len(set(raw_of_user.values())) == len(raw_of_user) > 10
    assert len(set(raw_of_item.values())) == len(raw_of_item) > 10


def test_cases_types_match_the_stream(cli, finished_run, tmp_path):
    """old/new tags: a user (item) is new in a period when it was not seen in any earlier period."""
    cases = tmp_path / "c.csv"
    assert cli("export", "1", "--out", cases, "--cases", "--db", finished_run["db"]).exit_code == 0
    rows = [r for r in _read_csv(cases) if r["method"] == "pop"]
    first_user, first_item = {}, {}
    for r in sorted(rows, key=lambda r: int(r["period"])):
        p = int(r["period"])
        first_user.setdefault(r["user"], p)
        first_item.setdefault(r["item"], p)
    # cases start at period 3, so a tag of 'new' implies the first appearance is in that very period
    for r in rows:
        if r["user_type"] == "new":
            assert first_user[r["user"]] == int(r["period"])
        if r["item_type"] == "new":
            assert first_item[r["item"]] == int(r["period"])
    assert any(r["user_type"] == "new" for r in rows)


def test_export_unknown_run_exits_2(cli, finished_run, tmp_path, one_line_error):
    r = cli("export", "42", "--out", tmp_path / "x.csv", "--db", finished_run["db"])
    one_line_error(r, 2, contains="no run 42")


def test_datasets_lists_all_six_protocols(cli):
    r = cli("datasets")
    assert r.exit_code == 0, r.stderr
    names = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    assert {"yelp", "adressa", "movielens", "csv", "synthetic-yelp", "synthetic-adressa"} <= names


def test_methods_lists_methods(cli):
    r = cli("methods")
    assert r.exit_code == 0, r.stderr
    names = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    assert set(METHODS) <= names


def test_help_for_every_command(cli):
    r = cli("--help")
    assert r.exit_code == 0 and "Usage" in r.stdout
    commands = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert {"datasets", "ingest", "periods", "run", "runs", "export", "methods"} <= set(commands)
    for name in commands:
        r = cli(name, "--help")
        assert r.exit_code == 0, (name, r.stderr)
        assert "Usage" in r.stdout and name in r.stdout


@pytest.mark.parametrize("argv, needle", [
    (["run", "movielens", "--methods", "full,nosuch"], "unknown method 'nosuch'"),
    (["run", "movielens", "--methods", "pop,pop"], "listed twice"),
    (["run", "movielens", "--device", "tpu"], "--device"),
    (["run", "nosuchthing"], "neither a dataset"),
    (["run", "movielens", "--resume", "1"], "not both"),
    (["run"], "name a dataset"),
    (["run", "--resume", "99"], "no store at"),  # and the mistyped --db is not created (below)
    (["run", "movielens", "--methods", ""], "no methods"),
    (["run", "movielens", "--threads", "0"], "--threads"),
    (["run", "synthetic-yelp", "--scale", "nan"], "--scale"),
    (["run", "synthetic-yelp", "--min-user-interactions", "-5"], "0 or more"),
    (["run", "movielens", "--data", "/no/such/u.data"], "no MovieLens ratings file"),
    (["run", "synthetic-yelp", "--out", "/no/such/folder/r.csv"], "does not exist"),
    (["replay", "synthetic-yelp"], "needs a terminal"),
    (["run", "synthetic-yelp", "--seed", "-1"], "--seed"),
    (["run", "synthetic-yelp", "--periods", "0"], "at least 4"),
    (["run", "synthetic-yelp", "--split", "1/1"], "TRAIN/VALIDATION/TEST"),
    (["run", "synthetic-yelp", "--retrain-start", "-1"], "--retrain-start"),
    (["run", "synthetic-yelp", "--period-length", "7x"], "7x"),
    (["run", "synthetic-yelp", "--data", "x.csv"], "drop --data"),
    (["run", "movielens", "--user-col", "uid"], "csv column options"),
    (["run", "movielens", "--scale", "0.5"], "--scale"),
    (["runs"], "no store at"),
    (["periods", "movielens"], "no store at"),
    (["run", "missing.toml"], "no scenario file"),
])
def test_run_bad_arguments_exit_2(cli, tmp_path, one_line_error, argv, needle):
    r = cli(*argv, "--db", f"sqlite:///{tmp_path}/x.db")
    one_line_error(r, 2, contains=needle)
    assert not (tmp_path / "x.db").exists()  # checked before anything is stored


def test_resume_refuses_new_settings_and_reports_a_finished_run(cli, finished_run, one_line_error):
    db = finished_run["db"]
    one_line_error(cli("run", "--resume", "1", "--methods", "pop", "--seed", "3", "--db", db), 2,
                   contains="drop --methods, --seed")
    one_line_error(cli("run", "--resume", "99", "--db", db), 2, contains="no run 99")
    r = cli("run", "--resume", "1", "--db", db)
    assert r.exit_code == 0, r.stderr
    assert "already finished" in r.stdout and "mean over test periods" in r.stdout


def test_export_to_a_missing_folder_exits_2(cli, finished_run, tmp_path, one_line_error):
    one_line_error(cli("export", "1", "--out", tmp_path / "no" / "x.csv", "--db", finished_run["db"]), 2,
                   contains="does not exist")
    one_line_error(cli("export", "1", "--out", tmp_path, "--db", finished_run["db"]), 2, contains="folder")


def test_finished_run_leaves_no_checkpoint_folder(finished_run):
    assert not (finished_run["folder"] / "sml-sim-checkpoints").exists()


def test_replay_checks_its_data_before_opening_the_ui(cli, monkeypatch, tmp_path, one_line_error):
    import app.cli as cli_mod
    import app.tui as tui

    monkeypatch.setattr(cli_mod, "has_terminal", lambda: True)
    monkeypatch.setattr(tui, "run_replay_app", lambda **kw: pytest.fail("the UI opened"))
    r = cli("replay", "movielens", "--data", tmp_path / "nope", "--db", f"sqlite:///{tmp_path}/t.db")
    one_line_error(r, 2, contains="no MovieLens ratings file")
    # data that reads but leaves nothing after the filters is refused before the UI too
    small = tmp_path / "u.data"
    small.write_text("".join(f"{u}\t{i}\t5\t{880000000 + 60 * (u * 7 + i)}\n" for u in range(5) for i in range(5)))
    r = cli("replay", "movielens", "--data", small, "--min-user-interactions", "10", "--db", f"sqlite:///{tmp_path}/t.db")
    one_line_error(r, 2, contains="nothing is left after dropping")
    r = cli("run", "movielens", "--data", small, "--min-user-interactions", "10", "--db", f"sqlite:///{tmp_path}/r.db")
    one_line_error(r, 2, contains="nothing is left after dropping")
    assert not (tmp_path / "t.db").exists() and not (tmp_path / "r.db").exists()  # no empty store left behind


def test_brackets_in_text_survive(cli, tmp_path, one_line_error):
    """Help, tables and errors print user text as is: no Rich markup eats "[...]"."""
    assert "[w_prev, w_hat]" in cli("methods").stdout
    assert "[default:" in cli("run", "--help").stdout
    one_line_error(cli("run", "csv", "--data", tmp_path / "a[b].csv", "--db", f"sqlite:///{tmp_path}/x.db"), 2,
                   contains="a[b].csv")


def test_short_help_and_version(cli):
    assert cli("-h").exit_code == 0
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.startswith("sml-sim")


def test_run_and_ingest_read_a_csv_with_other_columns(cli, tmp_path, toy_stream):
    users, items, times = toy_stream(n=600)
    path = tmp_path / "named.csv"
    path.write_text("uid;iid;ts\n" + "".join(f"{u};{i};{t}\n" for u, i, t in zip(users, items, times)))
    flags = ["--user-col", "uid", "--item-col", "iid", "--time-col", "ts", "--delimiter", ";"]
    db = f"sqlite:///{tmp_path}/c.db"
    assert cli("ingest", "csv", "--data", path, *flags, "--periods", "6", "--db", db).exit_code == 0
    r = cli("run", "csv", "--data", path, *flags, "--periods", "6", "--split", "4/1/1", "--retrain-start", "2",
            "--methods", "pop", "--threads", "1", "--db", db)
    assert r.exit_code == 0, r.stderr
    assert "mean over test periods" in r.stdout
    r = cli("runs", "--db", db, "--json")
    assert json.loads(r.stdout)[0]["source"] == f"csv ({path})"  # stored absolute: resumable from anywhere


def test_bad_scenario_file_exits_2(cli, tmp_path, one_line_error):
    bad = tmp_path / "bad.toml"
    bad.write_text("[dataset\nprotocol = 'csv'\n")
    one_line_error(cli("run", bad, "--db", f"sqlite:///{tmp_path}/x.db"), 2, contains="not valid TOML")
    bad.write_text("[dataset]\nprotocol = 'nope'\n")
    one_line_error(cli("run", bad, "--db", f"sqlite:///{tmp_path}/x.db"), 2, contains="protocol")
    bad.write_text("[dataset]\nprotocol = 'csv'\ncolour = 'red'\n")
    one_line_error(cli("run", bad, "--db", f"sqlite:///{tmp_path}/x.db"), 2, contains="colour")


def test_ingest_json_has_documented_keys(cli, tmp_path, toy_stream):
    users, items, times = toy_stream(n=300)
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in zip(users, items, times)))
    r = cli("ingest", "movielens", "--data", path, "--db", f"sqlite:///{tmp_path}/i.db", "--periods", "6",
            "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    for key in ("dataset", "source", "interactions", "users", "items", "periods", "train", "validation", "test",
                "retrain_start", "skipped_lines"):
        assert key in s, key
    for key in ("train", "validation", "test"):
        assert isinstance(s[key], list) and len(s[key]) == 2
    r = cli("ingest", "movielens", "--data", path, "--db", f"sqlite:///{tmp_path}/i.db", "--periods", "6")
    assert r.exit_code == 0
    assert "source:" in r.stdout and "per period:" in r.stdout
    r = cli("periods", "synthetic-yelp", "--db", f"sqlite:///{tmp_path}/i.db")
    assert r.exit_code == 2 and "no dataset 'synthetic-yelp'" in r.stderr and "sml-sim ingest" in r.stderr


def test_console_script_and_module_entry_points(sml_sim, tmp_path, one_line_error):
    import os
    import subprocess
    from pathlib import Path

    p = sml_sim("--help")
    assert p.returncode == 0 and "Usage" in p.stdout
    p = sml_sim("periods", "movielens", "--db", f"sqlite:///{tmp_path}/fresh.db")
    one_line_error(p, 2, contains="no store at")
    # a value of the wrong type, an unknown command: one line too, not click's usage block
    one_line_error(sml_sim("run", "demo", "--threads", "abc"), 2, contains="Invalid value for '--threads'")
    one_line_error(sml_sim("bogus"), 2, contains="No such command")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SML_SIM_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "app.cli", "runs", "--db", "nosuchdialect://x"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=120)
    one_line_error(p, 2)
    p = subprocess.run([sys.executable, "-m", "app.cli", "datasets"], cwd=repo, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "synthetic-adressa" in p.stdout


def test_broken_pipe_is_quiet(monkeypatch, tmp_path):
    """`sml-sim runs --json | head` must not end with an 'internal error' (main() means to swallow it)."""
    import app.cli as cli_mod

    class Sink(io.StringIO):
        def close(self):
            pass

    from db.store import Store

    Store(f"sqlite:///{tmp_path}/bp.db")  # an existing (empty) store
    sink = Sink()
    monkeypatch.setattr(sys, "stderr", sink)
    monkeypatch.setattr(sys, "argv", ["sml-sim", "runs", "--json", "--db", f"sqlite:///{tmp_path}/bp.db"])

    def broken_print(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli_mod, "print", broken_print, raising=False)
    try:
        cli_mod.main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    assert "internal error" not in sink.getvalue(), sink.getvalue()
    assert code in (0, None, 141)


def test_export_to_standard_output(cli, finished_run):
    r = cli("export", "1", "--out", "-", "--db", finished_run["db"])
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == len(METHODS) * 5 and "wrote 25 result rows" in r.stderr
    r = cli("periods", "csv", "--db", finished_run["db"], "--json")
    assert [p["index"] for p in json.loads(r.stdout)] == list(range(8))  # a list, as scripts expect


def test_continuing_a_replay_refuses_new_settings(cli, finished_run, monkeypatch, one_line_error):
    import app.cli as cli_mod
    import app.tui as tui

    monkeypatch.setattr(cli_mod, "has_terminal", lambda: True)
    monkeypatch.setattr(tui, "run_replay_app", lambda **kw: pytest.fail("the UI opened"))
    r = cli("replay", "--run", "1", "--methods", "pop", "--db", finished_run["db"])
    one_line_error(r, 2, contains="drop --methods")
    r = cli("replay", "synthetic-yelp", "--resume", "1", "--db", finished_run["db"])
    one_line_error(r, 2, contains="drop DATASET_OR_SCENARIO")
    r = cli("replay", "synthetic-yelp", "--resume", "99", "--db", finished_run["db"])
    one_line_error(r, 2, contains="no run 99")  # the missing run is said first


def test_continuing_a_replay_may_name_its_own_scenario(cli, finished_run, monkeypatch):
    """`replay demo --run 1` was refused although demo is run 1's own scenario."""
    import app.cli as cli_mod
    import app.tui as tui
    from app.tui.app import ReplayOutcome

    opened = []
    monkeypatch.setattr(cli_mod, "has_terminal", lambda: True)
    monkeypatch.setattr(tui, "run_replay_app", lambda **kw: opened.append(kw["run_id"]) or ReplayOutcome(
        run_id=kw["run_id"], finished=True, error=None, exported_to=None))
    own = finished_run["folder"] / "clirun.toml"
    r = cli("replay", own, "--run", "1", "--db", finished_run["db"])
    assert r.exit_code == 0, r.stderr
    assert opened == [1]
    # a file of the same name with other settings is not the run's: naming it would be ignored
    other = finished_run["folder"] / "elsewhere" / "clirun.toml"
    other.parent.mkdir(exist_ok=True)
    other.write_text(own.read_text().replace("[methods.fine]\nepochs = 1", "[methods.fine]\nepochs = 2"))
    (other.parent / "clirun.csv").write_bytes((own.parent / "clirun.csv").read_bytes())
    r = cli("replay", other, "--run", "1", "--db", finished_run["db"])
    assert r.exit_code == 2 and "drop DATASET_OR_SCENARIO" in r.stderr and opened == [1]


def test_out_with_a_tilde_is_written_where_it_was_checked(cli, tiny_scenario, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    toml = tiny_scenario(methods=("pop",))
    r = cli("run", toml, "--out", "~/r.csv", "--threads", "1", "--db", f"sqlite:///{tmp_path}/h.db")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "r.csv").exists()


def test_ingest_and_periods_print_bracketed_names_whole(cli, tmp_path, toy_stream):
    users, items, times = toy_stream(n=300)
    path = tmp_path / "a[b].csv"
    path.write_text("user,item,time\n" + "".join(f"{u},{i},{t}\n" for u, i, t in zip(users, items, times)))
    db = f"sqlite:///{tmp_path}/b.db"
    r = cli("ingest", "csv", "--data", path, "--periods", "6", "--db", db)
    assert r.exit_code == 0 and "a[b].csv" in r.stdout, r.stdout
    assert "a[b].csv" in cli("periods", "csv", "--db", db).stdout


def test_scenario_data_paths_are_stored_absolute(tiny_scenario, monkeypatch, tmp_path):
    from sml_sim.config import load_scenario

    toml = tiny_scenario()
    monkeypatch.chdir(tmp_path.parent)
    cfg = load_scenario(Path(tmp_path.name) / toml.name)  # a relative scenario path
    assert Path(cfg.dataset.data).is_absolute() and Path(cfg.dataset.data).exists()


def test_summary_names_a_method_that_failed(cli, tiny_scenario):
    """A method that fails mid-run has no row in the means; the summary must still say what happened."""
    from sml_sim.retrainers import METHODS, register
    from sml_sim.retrainers.mf_methods import FineTune

    class BreaksAtPeriod4(FineTune):
        def fit_period(self, t, next_period=None):
            if t == 4:
                raise RuntimeError("broken on purpose")
            return super().fit_period(t, next_period)

    register("breaks", BreaksAtPeriod4, {}, "test method")
    try:
        toml = tiny_scenario(methods=("fine", "breaks"))
        r = cli("run", toml, "--db", f"sqlite:///{toml.parent}/f.db", "--threads", "1")
    finally:
        METHODS.pop("breaks", None)
    assert r.exit_code == 1, r.stderr + r.stdout  # finished, but not every method: a script can tell
    assert "breaks failed at period 5: RuntimeError: broken on purpose" in r.stdout
    assert "1 method(s) failed: breaks" in r.stderr
    listed = cli("runs", "--db", f"sqlite:///{toml.parent}/f.db")
    assert "finished (breaks failed)" in listed.stdout, listed.stdout


def test_a_run_whose_reader_leaves_carries_on_to_the_end(sml_sim, tiny_scenario, tmp_path):
    """`sml-sim run ... 2>&1 | head -3`: progress goes to stderr; when the pipe closes the run must
    still finish with its results stored, not end as 'failed' with SystemExit: 1."""
    toml = tiny_scenario(methods=("fine", "pop"))
    db = tmp_path / "pipe.db"
    proc = sml_sim("run", toml, "--db", db, "--threads", "1", popen=True)
    proc.stderr.readline()  # the first progress line, then the reader leaves
    proc.stderr.close()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    r = sml_sim("runs", "--json", "--db", db)
    assert json.loads(r.stdout)[0]["status"] == "finished"


def test_run_says_what_reading_skipped(cli, tiny_scenario):
    toml = tiny_scenario(methods=("pop",))
    with open(toml.parent / "tiny.csv", "a") as f:
        f.write("u1,not-a-time\n")
    r = cli("run", toml, "--db", f"sqlite:///{toml.parent}/n.db")
    assert r.exit_code == 0, r.stderr
    assert "note: skipped 1" in r.stdout and "(first: line " in r.stdout
    assert "note: only " in r.stdout and "not comparable" in r.stdout  # a toy catalogue


def test_periods_takes_a_run_id(cli, finished_run):
    """Every csv file is a dataset named csv: a run id picks the one that run used."""
    r = cli("periods", "1", "--db", finished_run["db"])
    assert r.exit_code == 0, r.stderr
    assert "csv (" in r.stdout and "test" in r.stdout
    r = cli("periods", "99", "--db", finished_run["db"])
    assert r.exit_code == 2 and "no run 99" in r.stderr


def test_ingest_takes_a_scenario(cli, tiny_scenario):
    toml = tiny_scenario()
    # ingest trains nothing: a scenario written for a GPU still ingests on this (CPU) machine
    toml.write_text(toml.read_text().replace('device = "cpu"', 'device = "cuda"'))
    db = f"sqlite:///{toml.parent}/i.db"
    r = cli("ingest", toml, "--db", db)
    assert r.exit_code == 0, r.stderr
    assert "periods:       8" in r.stdout  # the scenario's cut, not the csv protocol's default 40
    r = cli("periods", "csv", "--db", db)
    assert r.exit_code == 0 and "tiny.csv" in r.stdout
    r = cli("periods", toml, "--db", db)  # the scenario names its dataset
    assert r.exit_code == 0 and "tiny.csv" in r.stdout


def test_reopening_a_finished_replay_shows_it_and_new_starts_another(cli, finished_run, monkeypatch):
    """Before, reopening a finished replay silently trained a second run with the same settings."""
    import app.cli as cli_mod
    import app.tui as tui
    from app.tui.app import ReplayOutcome

    opened = []

    def fake_app(*, store, config=None, run_id=None, threads=None, dataset=None, notes=(), take_over=False):
        opened.append((run_id, config))
        return ReplayOutcome(run_id=run_id or 2, finished=True, error=None, exported_to=None)

    monkeypatch.setattr(cli_mod, "has_terminal", lambda: True)
    monkeypatch.setattr(tui, "run_replay_app", fake_app)
    toml = finished_run["folder"] / "clirun.toml"
    assert cli("replay", toml, "--db", finished_run["db"]).exit_code == 0
    assert opened[-1] == (1, None)  # run 1, finished, reopened as it is
    assert cli("replay", toml, "--new", "--db", finished_run["db"]).exit_code == 0
    assert opened[-1][0] is None and opened[-1][1] is not None  # a new run
    # the data file changed since: run 1 cannot be reopened (its dataset differs), so a new run starts
    data = finished_run["folder"] / "clirun.csv"
    stat = data.stat()
    os.utime(data, (stat.st_atime, stat.st_mtime + 10))
    try:
        assert cli("replay", toml, "--db", finished_run["db"]).exit_code == 0
        assert opened[-1][0] is None
    finally:
        os.utime(data, (stat.st_atime, stat.st_mtime))


def test_a_run_records_its_thread_count_and_continues_with_it(cli, tiny_scenario, live_python_process):
    """The thread count changes the rounding of parallel sums: a run keeps the one it started with."""
    import torch

    from db.replay import Replay
    from db.store import Store
    from sml_sim.config import load_scenario

    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{toml.parent}/threads.db"
    r = cli("run", toml, "--db", db, "--threads", "1")
    assert r.exit_code == 0, r.stderr
    assert "(1 thread)" in r.stdout
    assert Store(db).run(1).config["threads"] == 1
    torch.set_num_threads(1)
    for _ in range(2):  # runs 2 and 3, interrupted after their first step
        interrupted_run(Store(db), toml)
    torch.set_num_threads(2)
    r = cli("run", "--resume", "2", "--db", db)
    assert r.exit_code == 0 and "(1 thread)" in r.stdout, r.stdout  # its own count, not the default
    r = cli("run", "--resume", "3", "--db", db, "--threads", "2")
    assert r.exit_code == 0 and "started with 1 thread;" in r.stderr and "(2 threads)" in r.stdout
    shown = cli("runs", "3", "--db", db).stdout  # the switch is kept with the run
    assert "threads: 2 (1 through period 3)" in shown, shown
    # a resume that is refused (here: another live process holds the run) records no switch
    rp = Replay.new(Store(db), load_scenario(toml))  # run 4, 1 thread... recorded as torch's now (2)
    rp.engine.run(until=rp.engine.first_step)  # still "running", owned by this process
    store = Store(db)
    with store.session() as s, s.begin():
        from db.models import RunRow

        s.get(RunRow, 4).owner = live_python_process  # alive, not us
    before = store.run(4).config
    r = cli("run", "--resume", "4", "--db", db, "--threads", "1")
    assert r.exit_code == 2 and "being run by another process" in r.stderr, r.stderr
    assert store.run(4).config == before


def test_periods_shows_the_dataset_ingested_last(cli, tmp_path, toy_stream):
    """Two cuts of one file share a name: `periods NAME` shows the one ingested (or run) last, even
    when that ingest only found it already stored, and says there are others."""
    from tests.conftest import write_stream_csv

    path = write_stream_csv(tmp_path / "s.csv", *toy_stream(n=600, seed=2))
    db = f"sqlite:///{tmp_path}/p.db"
    for n in (8, 6, 8):
        assert cli("ingest", "csv", "--data", path, "--periods", n, "--db", db).exit_code == 0
        r = cli("periods", "csv", "--db", db)
        assert r.exit_code == 0, r.stderr
        assert f"{n} periods" in r.stdout
    assert "2 stored datasets named 'csv'" in r.stdout
    assert len(json.loads(cli("periods", "csv", "--db", db, "--json").stdout)) == 8


def test_runs_shows_one_run_whole(cli, finished_run):
    r = cli("runs", "1", "--db", finished_run["db"])
    assert r.exit_code == 0, r.stderr
    assert "run 1: csv" in r.stdout and "periods: train 0-4, validation 5, test 6-7, retraining from 2" in r.stdout
    assert "full: epochs = 1" in r.stdout and "mean over test periods" in r.stdout
    shown = json.loads(cli("runs", "1", "--db", finished_run["db"], "--json").stdout)
    assert shown["run_id"] == 1 and shown["config"]["method_params"]["spmf"]["reservoir"] == 300
    assert shown["summary"]["test"]["ri_reference"] in ("full", "fine", "spmf")  # never pop or random
    assert shown["data"]["periods"] == 8 and shown["data"]["split"]["test"] == [6, 7]
    test = shown["summary"]["test"]
    assert set(test["means"]) == set(METHODS) and test["ri_reference"] in METHODS
    assert 0 <= test["means"]["fine"]["recall@20"] <= 1 and test["means"]["fine"]["periods"] == 2
    assert cli("runs", "9", "--db", finished_run["db"]).exit_code == 2


def test_delete_removes_a_run_and_its_checkpoints_only(cli, tiny_scenario, one_line_error):
    from db.replay import checkpoint_root
    from db.store import Store

    toml = tiny_scenario(methods=("pop", "fine"))
    db = f"sqlite:///{toml.parent}/del.db"
    assert cli("run", toml, "--db", db, "--threads", "1").exit_code == 0  # run 1, finished
    store = Store(db)
    interrupted_run(store, toml)  # run 2, interrupted: it has checkpoints
    folder = checkpoint_root(store) / "run-2"
    assert any(folder.iterdir())
    one_line_error(cli("delete", "2", "--db", db), 2, contains="add --yes")  # no terminal: must confirm
    assert store.run(2).status == "interrupted"
    r = cli("delete", "2", "--db", db, "--yes")
    assert r.exit_code == 0 and "removed run 2" in r.stdout and "checkpoints" in r.stdout, r.stdout
    assert not folder.exists() and not folder.parent.exists()  # no empty folders left behind
    assert [x.run_id for x in store.runs()] == [1]
    assert store.results(2) == [] and len(store.results(1)) > 0 and store.interaction_count(1) > 0
    one_line_error(cli("delete", "2", "--db", db, "--yes"), 2, contains="no run 2")
    r = cli("run", toml, "--db", db, "--threads", "1")
    assert r.exit_code == 0 and "run 3:" in r.stdout  # a deleted run's id is not handed out again
    # a run recorded as running by another machine's process: refused, unless --force
    with store.session() as s, s.begin():
        from db.models import RunRow

        run = s.get(RunRow, 3)
        run.status, run.owner = "running", "another-host:123"
    one_line_error(cli("delete", "3", "--db", db, "--yes"), 2, contains="--force")
    assert cli("delete", "3", "--db", db, "--yes", "--force").exit_code == 0


def test_a_bad_db_is_refused_before_the_data_is_read(cli, tiny_scenario, monkeypatch, one_line_error):
    import app.cli as cli_mod

    monkeypatch.setattr(cli_mod, "load_with_progress", lambda *a, **k: pytest.fail("the data was read first"))
    r = cli("run", tiny_scenario(methods=("pop",)), "--db", "sqlite:////nonexistent-folder/x.db")
    one_line_error(r, 2, contains="does not exist")


def _readme_json_keys() -> dict[str, set[str]]:
    """The keys README's 'Machine-readable output' paragraph documents, per command."""
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("**Machine-readable output.**", 1)[1].split("\n### ", 1)[0]
    documented = {}
    for bullet in section.split("\n- ")[1:]:
        command, _, rest = bullet.partition("`:")
        rest = re.sub(r"\([^)]*\)", "", rest)  # explanations in brackets name no keys of their own
        documented[command.strip("`")] = set(re.findall(r"`([a-z_@]+)`", rest.split("`summary.validation`")[0]))
    return documented


def test_readme_documents_the_json_keys_exactly(cli, finished_run, tmp_path, toy_stream):
    documented = _readme_json_keys()
    users, items, times = toy_stream(n=300)
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in zip(users, items, times)))
    ingest = json.loads(cli("ingest", "movielens", "--data", path, "--db", f"sqlite:///{tmp_path}/i.db",
                            "--periods", "6", "--json").stdout)
    assert set(ingest) == documented["ingest --json"]
    periods = json.loads(cli("periods", "csv", "--db", finished_run["db"], "--json").stdout)
    assert set(periods[0]) == documented["periods NAME --json"]
    runs = json.loads(cli("runs", "--db", finished_run["db"], "--json").stdout)
    assert set(runs[0]) == documented["runs --json"]
    one = json.loads(cli("runs", "1", "--db", finished_run["db"], "--json").stdout)
    assert set(one) == set(runs[0]) | documented["runs RUN_ID --json"]
    assert set(one["summary"]) == {"validation", "test"}
    assert set(one["summary"]["test"]) == {"means", "case_weighted_means", "ri_reference", "ri"}
    assert "`case_weighted_means`" in (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_unequal_test_periods_get_the_case_weighted_recall_too(cli, tmp_path):
    """The authors' code weights periods by their cases: on unequal cuts the two means differ."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 3000
    times = np.sort(1_600_000_000 + (50 * 86400 * rng.random(n) ** 0.25).astype(np.int64))  # ever denser
    rows = [f"u{rng.integers(60)},i{rng.integers(80)},{t}" for t in times]
    (tmp_path / "denser.csv").write_text("user,item,time\n" + "\n".join(rows) + "\n")
    db = f"sqlite:///{tmp_path}/w.db"
    r = cli("run", "csv", "--data", tmp_path / "denser.csv", "--period-length", "5d", "--split", "4/1/4", "--methods", "pop,random",
            "--db", db)
    assert r.exit_code == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert "note: the test periods hold" in said and "weighted by their cases" in said, said
    doc = json.loads(cli("runs", "1", "--db", db, "--json").stdout)["summary"]["test"]
    equal, weighted = doc["means"]["pop"]["recall@20"], doc["case_weighted_means"]["pop"]["recall@20"]
    assert f"pop {weighted:.4f}" in said and weighted != equal


def test_replay_shows_its_thread_notes_in_the_tui_log_not_behind_the_screen(cli, tiny_scenario, monkeypatch):
    """The TUI takes the whole screen: a note printed to stderr before it opened was seen only after it closed."""
    import torch

    import app.cli as cli_mod
    import app.tui as tui
    from app.tui.app import ReplayOutcome
    from db.store import Store

    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{toml.parent}/replay-threads.db"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    interrupted_run(Store(db), toml)
    torch.set_num_threads(before)
    opened = []

    def fake_app(*, store, config=None, run_id=None, threads=None, dataset=None, notes=(), take_over=False):
        opened.append((run_id, threads, list(notes)))
        return ReplayOutcome(run_id=run_id, finished=False, error=None, exported_to=None)

    monkeypatch.setattr(cli_mod, "has_terminal", lambda: True)
    monkeypatch.setattr(tui, "run_replay_app", fake_app)
    cores = os.cpu_count() or 1
    r = cli("replay", "--run", "1", "--db", db, "--threads", str(cores + 1))
    assert r.exit_code == 0, r.stderr
    run_id, threads, notes = opened[-1]
    assert run_id == 1 and threads == cores + 1
    assert any("started with 1 thread;" in n for n in notes), notes
    assert any("more threads than cores" in n for n in notes), notes
    assert "started with 1 thread" not in r.stderr and "more threads than cores" not in r.stderr


def test_replay_passes_force_on_only_with_a_run_id(cli, tiny_scenario, monkeypatch, one_line_error):
    import app.cli as cli_mod
    import app.tui as tui
    from app.tui.app import ReplayOutcome
    from db.store import Store

    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{toml.parent}/replay-force.db"
    interrupted_run(Store(db), toml)
    opened = []

    def fake_app(*, store, config=None, run_id=None, threads=None, dataset=None, notes=(), take_over=False):
        opened.append((run_id, take_over))
        return ReplayOutcome(run_id=run_id, finished=False, error=None, exported_to=None)

    monkeypatch.setattr(cli_mod, "has_terminal", lambda: True)
    monkeypatch.setattr(tui, "run_replay_app", fake_app)
    assert cli("replay", "--run", "1", "--db", db).exit_code == 0
    assert cli("replay", "--run", "1", "--db", db, "--force").exit_code == 0
    assert opened == [(1, False), (1, True)]
    one_line_error(cli("replay", toml, "--db", db, "--force"), 2, contains="--force goes with --run RUN_ID")


def test_out_never_overwrites_the_store_or_the_data_file(cli, finished_run, one_line_error, monkeypatch):
    """`--out` naming the --db file or the data file used to replace it with results: work lost."""
    import hashlib

    folder = finished_run["folder"]
    db, store_file, data = finished_run["db"], folder / "run.db", folder / "clirun.csv"
    toml = folder / "clirun.toml"

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    before = digest(data), cli("export", "1", "--db", db, "--out", "-").stdout
    attempts = [
        (("export", "1", "--db", db, "--out", store_file), "the results store"),
        (("export", "1", "--db", db, "--out", f"{store_file}-wal"), "the results store's journal"),
        (("export", "1", "--db", db, "--out", data), "the data"),
        (("run", toml, "--db", db, "--out", data), "the data"),  # the scenario names it
        (("run", "csv", "--data", data, "--db", db, "--out", store_file), "the results store"),
        (("run", "--resume", "1", "--db", db, "--out", data.name), "the data"),  # relative to the cwd below
        (("run", toml, "--db", db, "--out", toml), "an input of the run"),  # the scenario file itself
    ]
    monkeypatch.chdir(folder)
    for args, what in attempts:
        r = cli(*args)
        one_line_error(r)
        assert what in r.stderr, (args, r.stderr)
    assert "[dataset]" in toml.read_text()
    assert (digest(data), cli("export", "1", "--db", db, "--out", "-").stdout) == before  # (a store's bytes
    # may move on a WAL checkpoint when it is opened: its content is what counts)
    assert len(json.loads(cli("runs", "--db", db, "--json").stdout)) == 1  # nothing was started either


def test_a_copied_store_says_where_the_checkpoints_go_and_keeps_the_run(cli, tiny_scenario, one_line_error):
    """A copy of a store without its checkpoint folder used to fail on resume and mark the run failed."""
    import shutil
    import sqlite3

    from db.store import Store

    toml = tiny_scenario(methods=("pop", "fine"))
    folder = toml.parent
    interrupted_run(Store(f"sqlite:///{folder}/a.db"), toml)
    with sqlite3.connect(folder / "a.db") as source, sqlite3.connect(folder / "b.db") as copy:
        source.backup(copy)  # (the open store keeps recent writes in its WAL file)
    r = cli("run", "--resume", "1", "--db", f"sqlite:///{folder}/b.db")
    one_line_error(r, contains="if this store was copied or moved, copy sml-sim-checkpoints/OLD_STORE_NAME/run-1/")
    assert str(folder / "sml-sim-checkpoints" / "b.db") in r.stderr
    assert json.loads(cli("runs", "--db", f"sqlite:///{folder}/b.db", "--json").stdout)[0]["status"] == "interrupted"
    shutil.copytree(folder / "sml-sim-checkpoints" / "a.db" / "run-1", folder / "sml-sim-checkpoints" / "b.db" / "run-1")
    r = cli("run", "--resume", "1", "--db", f"sqlite:///{folder}/b.db")
    assert r.exit_code == 0, r.stderr
    assert json.loads(cli("runs", "--db", f"sqlite:///{folder}/b.db", "--json").stdout)[0]["status"] == "finished"


def test_partial_results_say_they_are_partial(cli, tiny_scenario):
    """An export of an unfinished run, and an interrupted `run --out`, said nothing about what was missing."""
    from db.store import Store

    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{toml.parent}/partial.db"
    replay = interrupted_run(Store(db), toml)
    r = cli("export", "1", "--db", db, "--out", toml.parent / "p.csv")
    assert r.exit_code == 0
    assert f"run 1 is interrupted, so this holds its periods through period {replay.engine.first_step + 1} only" \
        in " ".join(r.stderr.split())


def test_an_interrupted_run_says_its_out_file_was_not_written(cli, tiny_scenario, monkeypatch):
    import app.cli as cli_mod

    def interrupt(replay):
        replay.engine.run(until=replay.engine.first_step)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod, "drive_with_progress", interrupt)
    toml = tiny_scenario(methods=("pop",))
    out = toml.parent / "r.csv"
    r = cli("run", toml, "--db", f"sqlite:///{toml.parent}/i.db", "--out", out)
    assert r.exit_code == 130 and not out.exists()
    said = " ".join(r.stderr.split())
    assert "every method has them through period" in said and "was not written" in said, said
    assert f"sml-sim run --resume 1 --db sqlite:///{toml.parent}/i.db --out {out}` writes it at the end" in said, said


def test_periods_of_a_scenario_shows_its_own_cut_not_the_last_of_that_name(cli, tmp_path, one_line_error):
    """`periods demo` showed whichever synthetic-yelp was stored last (another scale), not the demo's."""
    toml = tmp_path / "mini.toml"
    toml.write_text('[dataset]\nprotocol = "synthetic-yelp"\nscale = 0.003\nperiods = 8\n')
    db = f"sqlite:///{tmp_path}/p.db"
    assert cli("ingest", "synthetic-yelp", "--scale", "0.002", "--periods", "8", "--db", db).exit_code == 0
    one_line_error(cli("periods", toml, "--db", db), contains="`sml-sim ingest")
    assert cli("ingest", toml, "--db", db).exit_code == 0
    assert cli("ingest", "synthetic-yelp", "--scale", "0.002", "--periods", "8", "--db", db).exit_code == 0
    assert "(scale 0.003, seed 0)" in cli("periods", toml, "--db", db).stdout
    assert "(scale 0.002, seed 0)" in cli("periods", "synthetic-yelp", "--db", db).stdout  # by name: the last


def test_the_summary_notes_cases_that_are_hits_by_construction(cli, tmp_path):
    """Every user read every item: every case had one candidate and even `random` scored Recall@20 1.0."""
    rows = ["user,item,time"] + [f"u{u},i{i},{1_600_000_000 + 60 * (p * 96 + u * 12 + i)}"
                                 for p in range(10) for u in range(8) for i in range(12)]
    (tmp_path / "dense.csv").write_text("\n".join(rows) + "\n")
    r = cli("run", "csv", "--data", tmp_path / "dense.csv", "--periods", "10", "--methods", "pop,random",
            "--db", f"sqlite:///{tmp_path}/d.db")
    assert r.exit_code == 0, r.stderr
    assert "note: 100.0% of the test cases have 20 candidates or fewer" in " ".join(r.stdout.split())


def test_a_usage_error_points_to_the_commands_own_help(monkeypatch, capsys):
    """An option without its value was raised in the group's context: the hint sent users to `sml-sim -h`."""
    import app.cli as cli_mod

    for argv, hint in ((["export", "1", "--out"], "`sml-sim export -h`"),
                       (["run", "demo", "--bogus"], "`sml-sim run -h`"),
                       (["--bogus"], "`sml-sim -h`"),
                       (["--bogus", "run"], "`sml-sim -h`")):  # an option of the group's, not run's
        monkeypatch.setattr(sys, "argv", ["sml-sim", *argv])
        with pytest.raises(SystemExit) as exc:
            cli_mod.main()
        said = " ".join(capsys.readouterr().err.split())
        assert exc.value.code == 2 and hint in said, (argv, said)


def test_an_unknown_option_names_the_commands_that_have_it_or_a_close_spelling(monkeypatch, capsys):
    """click suggested --no-header for --threads on ingest: a far-off guess instead of the fact."""
    import app.cli as cli_mod

    for argv, said_part in ((["ingest", "demo", "--threads", "2"], "--threads is an option of replay and run, not of ingest"),
                            (["run", "demo", "--thread", "2"], "no such option: --thread (did you mean --threads?)"),
                            (["export", "1", "--fliters"], "(did you mean --filters?)"),
                            (["run", "demo", "--bogus"], "no such option: --bogus (`sml-sim run -h`")):
        monkeypatch.setattr(sys, "argv", ["sml-sim", *argv])
        with pytest.raises(SystemExit) as exc:
            cli_mod.main()
        said = " ".join(capsys.readouterr().err.split())
        assert exc.value.code == 2 and said_part in said and "Possible options" not in said, (argv, said)


def test_a_cut_given_on_the_command_line_replaces_the_scenarios_other_cut(cli, tiny_scenario):
    """The README says flags override the scenario, but --period-length on a scenario that sets
    periods was refused as 'give either --periods or --period-length, not both'."""
    toml = tiny_scenario()
    toml.write_text(toml.read_text().replace('split = "5/1/2"\n', "").replace("retrain_start = 2\n", ""))
    db = f"sqlite:///{toml.parent}/cut.db"
    r = cli("ingest", toml, "--period-length", "5d", "--db", db, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["periods"] == 10
    toml.write_text(toml.read_text().replace("periods = 8", 'period_length = "5d"'))
    r = cli("ingest", toml, "--periods", "6", "--db", db, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["periods"] == 6


def test_runs_shows_the_settings_an_ablation_inherits(cli, tiny_scenario):
    """`runs RUN_ID` listed only an ablation's own section, not what it takes from [methods.sml]."""
    toml = tiny_scenario(methods=("sml-s",), n=600,
                         extra="[methods.sml]\nfc_size = 16\nouter_iters = 1\n[methods.sml-s]\nepochs_theta = 1\n")
    db = f"sqlite:///{toml.parent}/ab.db"
    assert cli("run", toml, "--db", db, "--threads", "1").exit_code == 0
    shown = " ".join(cli("runs", "1", "--db", db).stdout.split())
    assert "sml-s: fc_size = 16, outer_iters = 1, freeze_theta_serving = True, epochs_theta = 1" in shown, shown


def test_out_replaces_an_earlier_export_but_no_other_file(cli, tmp_path, tiny_scenario, one_line_error):
    """`export 1 --out other.db` turned another store into a CSV, and a scenario file could go the same way."""
    import contextlib
    import sqlite3

    toml = tiny_scenario(methods=("pop",), n=600)
    db = f"sqlite:///{tmp_path}/e.db"
    assert cli("run", toml, "--db", db).exit_code == 0
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as con:  # another store, closed: its bytes stay put
        con.execute("CREATE TABLE runs (id INTEGER)")
        con.commit()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for target in (other, notes):
        before = target.read_bytes()
        for argv in (["export", "1", "--out", target, "--db", db], ["run", toml, "--db", db, "--out", target]):
            one_line_error(cli(*argv), contains="exists and is not an sml-sim export")
        assert target.read_bytes() == before
    earlier = tmp_path / "earlier.csv"
    for argv in (["export", "1", "--out", earlier, "--db", db], ["export", "1", "--out", earlier, "--db", db, "--cases"],
                 ["run", "--resume", "1", "--db", db, "--out", earlier]):
        assert cli(*argv).exit_code == 0, argv
    assert earlier.read_text().startswith("run_id,dataset,")


def test_out_naming_a_folder_that_does_not_exist_yet_is_refused(cli, tmp_path, tiny_scenario, one_line_error):
    """`export 1 --out sub/` wrote a file named sub: the trailing / was lost with the Path type."""
    toml = tiny_scenario(methods=("pop",), n=600)
    db = f"sqlite:///{tmp_path}/o.db"
    assert cli("run", toml, "--db", db).exit_code == 0
    for argv in (["export", "1", "--out", f"{tmp_path}/sub/", "--db", db],
                 ["run", toml, "--db", db, "--out", f"{tmp_path}/sub/"]):
        one_line_error(cli(*argv), contains="sub/ is a folder; give a file name")
        assert not (tmp_path / "sub").exists()


def test_out_never_lands_on_a_movielens_file_found_in_a_data_folder(cli, tmp_path, toy_stream, one_line_error):
    """With a folder as --data (or the default location), the file read is found inside it."""
    users, items, times = toy_stream(n=300)
    (tmp_path / "ml").mkdir()
    ratings = tmp_path / "ml" / "u.data"
    ratings.write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in zip(users, items, times)))
    before = ratings.read_text()
    r = cli("run", "movielens", "--data", tmp_path / "ml", "--periods", "6", "--methods", "pop",
            "--db", f"sqlite:///{tmp_path}/m.db", "--out", ratings)
    one_line_error(r, contains="the data folder the run reads")
    assert ratings.read_text() == before


def test_periods_of_csv_scenarios_tells_their_files_apart(cli, tiny_scenario):
    """Two scenarios that differ only in their data file: each shows its own."""
    a = tiny_scenario("a", methods=("pop",))
    b = tiny_scenario("b", methods=("pop",), seed=1)
    db = f"sqlite:///{a.parent}/ab.db"
    for toml in (a, b):
        assert cli("ingest", toml, "--db", db).exit_code == 0
    assert "a.csv" in cli("periods", a, "--db", db).stdout
    assert "b.csv" in cli("periods", b, "--db", db).stdout


def test_out_of_range_numbers_are_one_line_errors(cli, finished_run, one_line_error):
    """A run id or seed past 64 bits, a huge --threads or --scale: OverflowError, MemoryError or a
    segmentation fault, with exit 1 or 139."""
    db = finished_run["db"]
    huge = "99999999999999999999"
    for argv, said in ((["runs", huge, "--db", db], f"no run {huge}"),
                       (["export", huge, "--out", "-", "--db", db], f"no run {huge}"),
                       (["run", "--resume", huge, "--db", db], f"no run {huge}"),
                       (["run", "demo", "--seed", huge, "--db", db], "below 2^63"),
                       (["run", "demo", "--scale", "1e9", "--db", db], "--scale 1e+09: at most 100"),
                       (["run", "demo", "--threads", "100000", "--db", db], "--threads 100000: at most")):
        one_line_error(cli(*argv), contains=said)


def test_a_damaged_or_foreign_shaped_store_is_one_line_not_an_internal_error(cli, tmp_path, tiny_scenario,
                                                                              one_line_error):
    import shutil
    import sqlite3

    toml = tiny_scenario(methods=("pop",), n=600)
    good = tmp_path / "good.db"
    assert cli("run", toml, "--db", f"sqlite:///{good}").exit_code == 0
    with contextlib.closing(sqlite3.connect(good)) as con:  # fold the WAL in: the pages below are the data
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damaged = tmp_path / "damaged.db"
    shutil.copy(good, damaged)
    page = sqlite3.connect(good).execute("PRAGMA page_size").fetchone()[0]
    with open(damaged, "r+b") as f:
        for k in range(2, damaged.stat().st_size // page):
            f.seek(k * page)
            f.write(b"\xff" * 16)
    for argv in (["runs", "1"], ["export", "1", "--out", "-"]):
        line = one_line_error(cli(*argv, "--db", f"sqlite:///{damaged}"))
        assert "damaged" in line or "cannot open" in line, line
    foreign = tmp_path / "foreign.db"
    shutil.copy(good, foreign)
    with contextlib.closing(sqlite3.connect(foreign)) as con:  # a column a later version might add
        con.execute("ALTER TABLE runs ADD COLUMN project TEXT NOT NULL DEFAULT 'x'")
        con.execute("CREATE TABLE runs2 AS SELECT * FROM runs")
        con.execute("DROP TABLE runs")
        con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, project TEXT NOT NULL)")
        con.commit()
    one_line_error(cli("run", toml, "--db", f"sqlite:///{foreign}"), contains="is another program's database")
    with contextlib.closing(sqlite3.connect(foreign)) as con:  # sml-sim's table names only
        con.execute("DROP TABLE runs2")
        con.commit()
    before = foreign.read_bytes()
    for argv in (["run", toml], ["ingest", toml]):
        one_line_error(cli(*argv, "--db", f"sqlite:///{foreign}"),
                       contains="is no store this version of sml-sim can use (its tables have sml-sim's names")
    one_line_error(cli("runs", "--db", f"sqlite:///{foreign}"), contains="has sml-sim's table names without their columns")
    assert foreign.read_bytes() == before  # nothing was written into it


def test_delete_force_never_removes_a_run_alive_on_this_machine(cli, tmp_path, tiny_scenario, one_line_error,
                                                                live_python_process):
    """--force is for a process on another machine; a live one here crashed when its run vanished."""

    from db.store import Store

    toml = tiny_scenario(methods=("pop",))
    url = f"sqlite:///{tmp_path}/live.db"
    run_id = interrupted_run(Store(url), toml).run_id
    with Store(url).engine.begin() as conn:  # the run, as a live process of this machine holds it
        conn.execute(text("UPDATE runs SET status = 'running', owner = :o WHERE id = :r"),
                     {"o": live_python_process, "r": run_id})
    one_line_error(cli("delete", str(run_id), "--yes", "--force", "--db", url), contains="another process (PID")
    assert Store(url).run(run_id).status == "running"


def test_a_column_named_full_is_not_taken_for_a_full_disk():
    from sqlalchemy.exc import OperationalError

    from app.cli import store_trouble

    said = store_trouble(OperationalError("INSERT", {}, Exception("table case_ranks has no column named full_rank")))
    assert "does not have the shape" in said and "room" not in said
    assert "no room left" in store_trouble(OperationalError("INSERT", {}, Exception("database or disk is full")))


def test_runs_of_a_file_with_other_seeds_share_its_stored_copy(cli, tiny_scenario, db_counts, one_line_error):
    """--seed went into a real file's dataset identity: every seed stored the whole file again, and
    `ingest csv --seed 5` was accepted although a seed changes nothing a file reads."""
    toml = tiny_scenario(methods=("pop",))
    db_file = toml.parent / "seeds.db"
    db = f"sqlite:///{db_file}"
    for seed in ("1", "2"):
        r = cli("run", toml, "--seed", seed, "--db", db)
        assert r.exit_code == 0, r.stderr
    assert db_counts(db_file)["datasets"] == 1
    assert [json.loads(cli("runs", n, "--db", db, "--json").stdout)["seed"] for n in ("1", "2")] == [1, 2]
    one_line_error(cli("ingest", toml, "--seed", "5", "--db", db), 2, contains="--seed seeds the synthetic streams")
    one_line_error(cli("ingest", "csv", "--data", toml.with_suffix(".csv"), "--seed", "5", "--db", db), 2,
                   contains="csv data is read from its file as it is")
    # a synthetic stream is what a seed makes: one copy per seed
    for seed in ("1", "2"):
        assert cli("ingest", "synthetic-yelp", "--scale", "0.002", "--seed", seed, "--db", db).exit_code == 0
    assert db_counts(db_file)["datasets"] == 3


def test_a_file_that_is_no_store_is_never_written_into(cli, tiny_scenario, tmp_path, one_line_error):
    """`runs --db empty.db` wrote the schema into the empty file, and any command given another
    program's SQLite database added sml-sim's tables to it and switched it to WAL mode for good."""
    import sqlite3

    from sqlalchemy import create_engine

    toml = tiny_scenario(methods=("pop",))
    empty, foreign = tmp_path / "empty.db", tmp_path / "app.db"
    empty.touch()
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    for args in (("runs",), ("runs", "1"), ("periods", "csv"), ("export", "1", "--out", "-"), ("run", "--resume", "1")):
        one_line_error(cli(*args, "--db", f"sqlite:///{empty}"), 2, contains="the file is empty, not an sml-sim store")
        one_line_error(cli(*args, "--db", f"sqlite:///{foreign}"), 2, contains="another program's database")
    for args in (("run", toml), ("ingest", toml)):
        one_line_error(cli(*args, "--db", f"sqlite:///{foreign}"), 2, contains="another program's database")
    assert empty.stat().st_size == 0 and foreign.read_bytes() == before
    assert not (tmp_path / "app.db-wal").exists()
    # a table of its own that happens to be named like one of sml-sim's does not make it a store
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    for args in (("runs",), ("run", toml), ("ingest", toml)):
        one_line_error(cli(*args, "--db", f"sqlite:///{foreign}"), 2, contains="another program's database")
    # nor does naming it by an SQLite URI get past the check
    one_line_error(cli("run", toml, "--db", f"sqlite:///file:{foreign}?uri=true"), 2,
                   contains="another program's database")
    assert foreign.read_bytes() == before and not (tmp_path / "app.db-wal").exists()
    # an empty file is a fine place for a new store
    assert cli("ingest", toml, "--db", f"sqlite:///{empty}").exit_code == 0
    assert "no runs yet" in cli("runs", "--db", f"sqlite:///{empty}").stdout
    # a store with only some of sml-sim's tables (being created by another process, or left so by
    # one killed while it created them) is a store: opening it completes it
    from db.models import Base

    half = tmp_path / "half.db"
    con = sqlite3.connect(half)
    con.close()
    engine = create_engine(f"sqlite:///{half}")
    Base.metadata.tables["datasets"].create(engine)
    engine.dispose()
    assert cli("ingest", toml, "--db", f"sqlite:///{half}").exit_code == 0
    assert "no runs yet" in cli("runs", "--db", f"sqlite:///{half}").stdout


def test_a_seed_out_of_range_is_refused_for_a_file_too(cli, tiny_scenario, db_counts, one_line_error):
    """Once a file's dataset stopped taking the seed, nothing checked it: -1 ended in an internal
    error and a failed run left in the store."""
    toml = tiny_scenario(methods=("pop",))
    db_file = toml.parent / "seedcheck.db"
    for seed in ("-1", str(2**63)):
        one_line_error(cli("run", toml, f"--seed={seed}", "--db", f"sqlite:///{db_file}"), 2,
                       contains="--seed must be 0 or more and below 2^63")
    assert not db_file.exists() or db_counts(db_file).get("runs", 0) == 0


def test_replay_reopens_a_run_whose_file_dataset_recorded_the_seed(cli, tiny_scenario, monkeypatch):
    """Earlier versions put the run's --seed into a file's dataset spec; replay must still find the
    run with the same settings instead of starting another."""
    import app.cli as cli_mod
    import app.tui as tui
    from app.tui.app import ReplayOutcome
    from db.store import Store

    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{toml.parent}/oldseed.db"
    assert cli("run", toml, "--seed", "5", "--db", db).exit_code == 0
    store = Store(db)
    with store.engine.begin() as conn:  # as an earlier version recorded it
        from sqlalchemy import text

        config = json.loads(conn.execute(text("SELECT config FROM runs WHERE id = 1")).scalar())
        config["dataset"]["seed"] = 5
        conn.execute(text("UPDATE runs SET config = :c WHERE id = 1"), {"c": json.dumps(config)})
    opened = []

    def fake_app(*, store, config=None, run_id=None, threads=None, dataset=None, notes=(), take_over=False):
        opened.append(run_id)
        return ReplayOutcome(run_id=run_id or 2, finished=True, error=None, exported_to=None)

    monkeypatch.setattr(cli_mod, "has_terminal", lambda: True)
    monkeypatch.setattr(tui, "run_replay_app", fake_app)
    assert cli("replay", toml, "--seed", "5", "--db", db).exit_code == 0
    assert opened == [1]


def test_a_bad_setting_from_the_scenario_file_is_named_as_the_file_writes_it(cli, tiny_scenario, one_line_error):
    """Every scenario value that check_spec refused was named as a flag the user never typed."""
    toml = tiny_scenario(methods=("pop",))
    bad = toml.with_name("bad.toml")
    bad.write_text(toml.read_text().replace("retrain_start = 2", "retrain_start = 2\nmin_user_interactions = -3"))
    line = one_line_error(cli("run", bad, "--db", f"sqlite:///{toml.parent}/n.db"), 2)
    assert line.startswith("error: [dataset] min_user_interactions must be 0 or more, not -3 (settings from"), line
    # given on the command line, the same mistake is named as the flag
    line = one_line_error(cli("run", toml, "--min-user-interactions", "-3", "--db", f"sqlite:///{toml.parent}/n.db"), 2)
    assert "--min-user-interactions must be 0 or more" in line and "[dataset]" not in line, line
    # --periods against the file's split: the message says which split would add up
    line = one_line_error(cli("run", toml, "--periods", "10", "--db", f"sqlite:///{toml.parent}/n.db"), 2)
    assert "split 5/1/2 does not add up to 10 periods; with the same shares, 7/1/2 does" in line, line


def test_methods_a_scenario_defines_but_does_not_list_are_named(cli, tiny_scenario):
    """Without a [run] methods list the defaults ran, and the configurations the file defined for
    the study were silently left out."""
    toml = tiny_scenario(methods=("pop",), extra='[methods.fine-2]\nkind = "fine"\nepochs = 2\n')
    unlisted = toml.with_name("unlisted.toml")
    unlisted.write_text(toml.read_text().replace("methods = ['pop']\n", ""))
    r = cli("run", unlisted, "--db", f"sqlite:///{toml.parent}/u.db")
    assert r.exit_code == 0, r.stderr
    assert "fine-2 is configured but not run: [run] has no methods list, so the defaults run" in r.stderr
    r = cli("run", unlisted, "--methods", "fine-2", "--db", f"sqlite:///{toml.parent}/u.db")
    assert r.exit_code == 0 and "configured but not run" not in r.stderr
    assert "configured but not run" not in cli("run", toml, "--db", f"sqlite:///{toml.parent}/u.db").stderr  # listed
    # settings of a built-in method that the defaults leave out are unused too
    tuned = toml.with_name("tuned.toml")
    tuned.write_text(unlisted.read_text() + "[methods.sml]\nouter_iters = 2\n")
    r = cli("run", tuned, "--methods", "pop", "--db", f"sqlite:///{toml.parent}/u.db")
    assert "configured but not run" not in r.stderr  # --methods says what runs
    from sml_sim.config import load_scenario

    assert "fine-2, sml are configured but not run" in load_scenario(tuned).notes[0]


def test_replay_says_a_run_it_only_showed_was_not_continued(cli, tiny_scenario, monkeypatch):
    import app.cli as cli_mod
    import app.tui as tui
    from app.tui.app import ReplayOutcome
    from db.store import Store

    toml = tiny_scenario(methods=("pop",))
    db = f"sqlite:///{toml.parent}/shown.db"
    interrupted_run(Store(db), toml)
    reason = "run 1 cannot continue: its checkpoints are not in X"
    monkeypatch.setattr(cli_mod, "has_terminal", lambda: True)
    monkeypatch.setattr(tui, "run_replay_app", lambda **kw: ReplayOutcome(
        run_id=1, finished=False, error=None, exported_to=None, view_only=reason))
    r = cli("replay", "--run", "1", "--db", db)
    assert r.exit_code == 0 and f"run 1 was shown, not continued: {reason}" in r.stdout
    assert "continue with" not in r.stdout


def test_a_dataset_seed_in_a_scenario_for_a_file_is_refused(cli, tiny_scenario, one_line_error):
    """It stored the same file again under another identity, as --seed once did."""
    toml = tiny_scenario(methods=("pop",))
    seeded = toml.with_name("seeded.toml")
    seeded.write_text(toml.read_text().replace("retrain_start = 2", "retrain_start = 2\nseed = 7"))
    for command in ("run", "ingest"):
        one_line_error(cli(command, seeded, "--db", f"sqlite:///{toml.parent}/s.db"), 2,
                       contains="[dataset] seed seeds the synthetic streams; csv data is read from its file")


def test_an_error_found_while_reading_names_file_values_as_the_file_writes_them(cli, tiny_scenario, one_line_error):
    """Only the checks made before reading said [dataset] periods; the reading itself said --periods."""
    toml = tiny_scenario(methods=("pop",))
    many = toml.with_name("many.toml")
    many.write_text(toml.read_text().replace("periods = 8", "periods = 100000").replace('split = "5/1/2"\n', ""))
    for command in ("run", "ingest"):
        line = one_line_error(cli(command, many, "--db", f"sqlite:///{toml.parent}/m.db"), 2)
        assert "[dataset] periods" in line and "--periods" not in line, line
    # given on the command line, it is the flag
    line = one_line_error(cli("run", toml, "--periods", "100000", "--split", "99998/1/1",
                              "--db", f"sqlite:///{toml.parent}/m.db"), 2)
    assert "--periods" in line, line
