#!/usr/bin/env bash
# One device call on a lent GPU machine (no network, its own Python 3.12 with CUDA torch):
# unpack the wheel bundle (`python -m bench.gpu_bundle`, carried as .gpu_bundle), then run
# the GPU checks one after another, each under its own time cap so one that hangs leaves the
# others their time. Logs and reports land in $OUT.
#
#   device run, carry [".gpu_bundle"]:  bash bench/gpu_session.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
tar xzf .gpu_bundle/site.tar.gz -C /tmp || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 USE_HUB_KERNELS=NO HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"

step() {  # name, seconds, command...
  local name=$1 cap=$2; shift 2
  local started=$SECONDS
  timeout -k 10 "$cap" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - started)) s (cap $cap s)" | tee -a "$OUT/steps.txt"
  tail -n 25 "$OUT/$name.log"
}

step gpu_check 370 python3 -m bench.gpu_check --quick --out "$OUT/gpu_check"
step gpu_quantized 90 python3 -m bench.gpu_quantized --json "$OUT/gpu_quantized.json"
step inference 100 python3 -m bench.inference --device cuda --requests 32 --max-tokens 16
