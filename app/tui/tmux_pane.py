"""Drive the real `sml-sim replay` in a tmux pane: the end-to-end test and the latency benchmark
share this driver. Each pane runs on its own tmux server socket (``-L``), so a user's sessions are
never touched. After the app exits, the pane prints ``__EXIT__=<code>`` and stays open to be read.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


class TmuxPane:
    def __init__(self, width: int, height: int, cwd: Path, label: str = "pane"):
        self.socket = f"sml-sim-{label}-{uuid.uuid4().hex[:8]}"
        self.width, self.height, self.cwd = width, height, cwd

    def tmux(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              check=check).stdout

    def start(self, argv: list[str]) -> None:
        shell = " ".join(_quote(a) for a in argv) + "; echo __EXIT__=$?; sleep 600"
        env = {"TERM": "xterm-256color", "COLUMNS": str(self.width), "LINES": str(self.height)}
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "p", "-x", str(self.width), "-y", str(self.height),
                  *[f"-e{k}={v}" for k, v in env.items()], "-c", str(self.cwd), shell)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "p", check=False)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "p", *keys)

    def wait_for(self, pattern: str, timeout: float, poll: float = 0.05) -> str:
        """The screen once ``pattern`` appears on it; TimeoutError (with the screen) otherwise."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if re.search(pattern, text):
                return text
            time.sleep(poll)
        raise TimeoutError(f"{pattern!r} not on screen within {timeout} s; the screen:\n{text}")

    def kill(self) -> None:
        self.tmux("kill-server", check=False)
