"""End to end: the real `sml-sim replay` in a tmux pane, driven with send-keys, read with capture-pane.

Runs on its own tmux server socket (``-L``), so it never touches the user's sessions.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from app.tui.tmux_pane import TmuxPane

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (.ci/run installs it; apt-get install tmux)")

REPO = Path(__file__).resolve().parent.parent


def sml_sim_command() -> list[str]:
    script = Path(sys.executable).parent / "sml-sim"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


@pytest.fixture
def pane(tmp_path):
    p = TmuxPane(100, 30, tmp_path, label="test")
    yield p
    p.kill()


def test_replay_in_tmux_steps_two_periods_and_quits_fast(pane, tmp_path):
    db = tmp_path / "t.db"
    pane.start([*sml_sim_command(), "replay", "synthetic-yelp", "--periods", "8", "--split", "5/1/2",
                "--retrain-start", "2", "--scale", "0.002", "--methods", "fine,pop,random", "--db", str(db),
                "--device", "cpu", "--threads", "1"])
    # Opening pre-trains and runs the first step by itself (period 3 scored), then we step twice.
    pane.wait_for(r"period 3 train: Recall@20 fine \d", timeout=60)
    pane.wait_for(r"ready: n retrains on period 3", timeout=20)
    pane.keys("n")
    pane.wait_for(r"ready: n retrains on period 4", timeout=30)
    pane.keys("space")
    pane.wait_for(r"ready: n retrains on period 5", timeout=30)
    # Both stepped periods are on screen: one log line each, and the table's last period.
    screen = pane.wait_for(r"period 4 train: Recall@20 fine \d\.\d{4} · pop \d\.\d{4} · random \d\.\d{4}"
                           r"[\s\S]*period 5 validation: Recall@20 fine \d\.\d{4} · pop \d\.\d{4} · random", timeout=5)
    assert re.search(r"pop\s+5 val\s+\d\.\d{4}", screen), screen
    assert "SYNTHETIC" in screen and "period 5/7" in screen
    # q exits within 5 s, even with a step running
    pane.keys("n")
    t0 = time.monotonic()
    pane.keys("q")
    screen = pane.wait_for(r"__EXIT__=\d+", timeout=5)
    assert time.monotonic() - t0 < 5
    assert "__EXIT__=0" in screen, screen
    # every committed period is kept
    from db.store import Store

    periods = {(r["method"], r["period"]) for r in Store(f"sqlite:///{db}").results(1)}
    assert {(m, p) for m in ("fine", "pop", "random") for p in (3, 4, 5)} <= periods
