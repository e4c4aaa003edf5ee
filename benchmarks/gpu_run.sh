#!/usr/bin/env bash
# The device side of the GPU suite (see benchmarks/gpu_prepare.sh): install the
# carried wheels, put the data where the project expects it, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cat .gpu/p1/ray-*.whl.aa .gpu/p2/ray-*.whl.ab > "/tmp/$(basename .gpu/p1/ray-*.whl.aa .aa)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  /tmp/ray-*.whl .gpu/p2/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p ../shared && rm -rf ../shared/data && cp -r .gpu/p2/data ../shared/data
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
python3 -m benchmarks.gpu_suite --model .gpu/p2/model --out "${OUT:-outputs/gpu-suite}" "$@"
