"""End to end: the real `sml-sim replay` in a tmux pane, driven with send-keys, read with capture-pane.

Runs on its own tmux server socket (``-L``), so it never touches the user's sessions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (.ci/run installs it; apt-get install tmux)")

REPO = Path(__file__).resolve().parent.parent


def sml_sim_command() -> list[str]:
    script = Path(sys.executable).parent / "sml-sim"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


class Pane:
    def __init__(self, tmp_path: Path, width: int, height: int):
        self.socket = f"sml-sim-test-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp_path
        self.width, self.height = width, height

    def tmux(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check)
        return out.stdout

    def start(self, argv: list[str]) -> None:
        cmd = " ".join(_quote(a) for a in argv)
        # After the app exits the pane prints its exit code and stays open to be read.
        shell = f"{cmd}; echo __EXIT__=$?; sleep 600"
        env = {"TERM": "xterm-256color", "COLUMNS": str(self.width), "LINES": str(self.height)}
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(self.width), "-y", str(self.height),
                  *[f"-e{k}={v}" for k, v in env.items()], "-c", str(self.tmp), shell)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t", check=False)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if re.search(pattern, text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not on screen within {timeout} s; the screen:\n{text}")

    def kill(self) -> None:
        self.tmux("kill-server", check=False)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture
def pane(tmp_path):
    p = Pane(tmp_path, 100, 30)
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
