#!/usr/bin/env bash
# Create .venv and install sml-sim with its test tools. Safe to run again (it only adds what is missing).
#
# torch is installed first, as a CPU build, so that resolving `torch>=2.4` never pulls a multi-GB
# CUDA build: from a local wheel where the machine has one (/opt/wheels), else from PyTorch's CPU
# index. GPU users: install the CUDA torch of your choice into .venv first (see README), then run
# this; an installed torch is kept. SML_SIM_TORCH="torch==X.Y.Z" picks another version.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
pip=(.venv/bin/pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if compgen -G "/opt/wheels/torch-*.whl" >/dev/null; then
        echo "installing torch from the local wheel in /opt/wheels ..."
        "${pip[@]}" install --find-links /opt/wheels "${SML_SIM_TORCH:-torch==2.13.0}"
    else
        echo "installing torch (CPU build) ..."
        "${pip[@]}" install "${SML_SIM_TORCH:-torch}" --index-url https://download.pytorch.org/whl/cpu \
            || "${pip[@]}" install "${SML_SIM_TORCH:-torch}"
    fi
fi
echo "installing sml-sim and its dependencies ..."
"${pip[@]}" install -e ".[dev]"
