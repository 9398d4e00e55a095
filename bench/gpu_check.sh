#!/usr/bin/env bash
# Issue 7's device check in one command, for a machine with a CUDA GPU (about 4 minutes on an H200):
#
#     bash bench/gpu_check.sh
#
# 1. counts the calls that make the host wait for the GPU during one training period of SML,
#    Full-retrain and Fine-tune and one evaluation (bench/cuda_sync_check.py): the claim to check is
#    "no per-batch host/device copies";
# 2. times the first and the last period of SML, SML-S, Full-retrain and Fine-tune at scale 1.0 with
#    the yelp scenario's settings (bench/bench_late_period.py; paper Table 2), with the transfer's
#    GFLOP/s next to a float32 matrix product on the same GPU;
# 3. profiles one SML training period (bench/profile_sml_cuda.py): the share of wall time the GPU
#    spends running kernels, and kernel launches per batch (host-bound or GPU-bound?).
# It needs only a Python with a CUDA build of torch, and numpy: the core imports nothing else, so a
# GPU machine's own python3 will do (PYTHON=... to choose another). Logs go to $OUT if it is set (the
# device tool's output folder), else to ./gpu-check/. A dry run of the same steps on the CPU, at a
# small scale: DEVICE=cpu SCALE=0.05 bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-1.0}
LOGS=${OUT:-gpu-check}
mkdir -p "$LOGS"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1

{ nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
} 2>&1 | tee "$LOGS/device.txt"

timeout 150 $PY bench/cuda_sync_check.py --device "$DEVICE" 2>&1 | tee "$LOGS/sync.txt"
timeout 420 $PY bench/bench_late_period.py --scale "$SCALE" --periods 10,38 --methods full,sml,fine,sml-s \
    --scenario scenarios/yelp.toml --device "$DEVICE" 2>&1 | tee "$LOGS/late_period.txt"
if [ "$DEVICE" = cuda ]; then  # the profile reads GPU kernel times: nothing to dry-run
    timeout 90 $PY bench/profile_sml_cuda.py --scale 0.25 --period 24 2>&1 | tee "$LOGS/profile.txt"
fi
