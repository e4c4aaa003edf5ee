#!/usr/bin/env bash
# The device side of the GPU suite (see benchmarks/gpu_prepare.sh): install the
# carried wheels, put the data where the project expects it, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
first=$(ls /tmp/gpu/ray-*.whl.aa 2>/dev/null || ls .gpu/p1/ray-*.whl.aa)  # see gpu_prepare.sh
wheel=/tmp/wheels/$(basename "$first" .aa)
mkdir -p /tmp/wheels && cat "$first" .gpu/p2/ray-*.whl.ab > "$wheel"
python3 -m pip install -q --upgrade --no-index --no-deps --no-compile --no-cache-dir \
  --target /tmp/site "$wheel" .gpu/p2/whl/*.whl 2>&1 | grep -v "already exists" || true
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p ../shared && rm -rf ../shared/data && cp -r .gpu/p2/data ../shared/data
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
# The corpus and annotations stay on the device; the log, JSON and table come back.
back=${OUT:-outputs/gpu-suite} && mkdir -p "$back"
python3 -m benchmarks.gpu_suite --model .gpu/p2/model --out /tmp/gpu-suite "$@" 2>&1 | tee "$back/log"
cp /tmp/gpu-suite/gpu_suite.* "$back/"
# Ray Data's per-dataset logs (each operator's progress every 5 s): where (c)'s time went.
find /tmp/ray -name 'ray-data-dataset_*.log' -exec cat {} + 2>/dev/null | gzip > "$back/ray-data.log.gz" || true
