#!/usr/bin/env bash
# GPU check (see benchmarks/gpu_check.py): paper-size search and final-training timings, peak memory and the
# extrapolated wall time of each protocol. On a CUDA machine in about 5 minutes; `--smoke` runs tiny sizes on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu_check.py "$@"
