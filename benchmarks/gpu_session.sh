#!/usr/bin/env bash
# One prepared run on a lent CUDA machine (a fixed device-time budget, so everything in one
# call): the CUDA tests, then the GPU part of every benchmark. Logs go to $OUT (or ./gpu-out).
# Kornia (and the fast-pytorch-kmeans peer) are carried as wheels in .whl/ since that machine
# has no network:  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#   --platform manylinux2014_x86_64 -d .whl kornia kornia_rs fast-pytorch-kmeans
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
step() {  # step NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T))"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  tail -n 40 "$OUT/$name.log"; echo "=== $name rc=$rc"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, triton, kornia; print('torch', torch.__version__, 'triton', triton.__version__, 'kornia', kornia.__version__)"
step cuda_tests 90 python3 -m pytest -q -p no:cacheprovider -k cuda tests
step bench_gpu 80 python3 benchmarks/bench_gpu.py --device cuda
step bench_dominant 40 python3 benchmarks/bench_dominant.py --gpu-only
step bench_delta_e 60 python3 benchmarks/bench_delta_e.py --gpu-only
step bench_cli 100 python3 benchmarks/bench_cli.py --devices cuda --n 200
step bench_distributed 90 python3 benchmarks/bench_distributed.py --devices cuda --n 200 --repeat 1
