#!/usr/bin/env bash
# Create .venv and install sml-sim with its test tools. Safe to run again (it only adds what is missing).
#
# torch: the CPU build is installed first so that resolving `torch>=2.2` never pulls a multi-GB CUDA
# build. GPU users: install the CUDA torch of your choice into .venv first (see README), then run this;
# an installed torch that satisfies the range is kept. Override with SML_SIM_TORCH="torch==X.Y.Z".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
pip_args=(--disable-pip-version-check -q)
[ -d /opt/wheels ] && pip_args+=(--find-links /opt/wheels)   # a local torch wheel, where the machine has one
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    torch_req=${SML_SIM_TORCH:-torch==2.13.0}
    echo "installing $torch_req (CPU build where available) ..."
    .venv/bin/pip install "${pip_args[@]}" "$torch_req" --extra-index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
        || .venv/bin/pip install "${pip_args[@]}" "$torch_req"
fi
echo "installing sml-sim and its dependencies ..."
.venv/bin/pip install "${pip_args[@]}" -e ".[dev]"
