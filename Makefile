# The two commands of the README. Each sets up .venv first (fast when it already exists).
.PHONY: setup demo test lint bench

setup:
	bash scripts/setup.sh

demo: setup
	@# The live TUI needs a terminal; without one (CI, a pipe) the same replay runs headless.
	@if [ -t 0 ] && [ -t 2 ]; then .venv/bin/sml-sim replay demo; \
	else echo "no terminal: replaying the demo headless (sml-sim run demo)"; .venv/bin/sml-sim run demo; fi

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .
