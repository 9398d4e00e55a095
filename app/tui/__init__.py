"""The live replay TUI (Textual): `sml-sim replay DATASET_OR_SCENARIO`.

``run_replay_app`` opens it on a new run (``config``) or resumes one (``run_id``); ``ReplayApp`` is
the app itself, for tests and embedding.
"""

from app.tui.app import ReplayApp, run_replay_app

__all__ = ["ReplayApp", "run_replay_app"]
