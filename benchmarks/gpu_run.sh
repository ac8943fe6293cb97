#!/usr/bin/env bash
# One GPU session: environment, GPU tests of every kernel, then the benchmark suites.
# Usage (repo root, on the GPU machine): bash benchmarks/gpu_run.sh OUTDIR [suite ...]
# Each suite prints its table and writes JSON into OUTDIR; logs go there too.
set -uo pipefail
out=${1:?output folder}; shift
suites=("$@")
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -d .whl ]; then  # packages the GPU image lacks travel as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw --format=csv | tee "$out/env.txt"
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)" | tee -a "$out/env.txt"
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout "${TEST_TIMEOUT:-300}" python3 -m pytest ${TESTS:-tests/ops} -q -x --timeout 240 -p no:cacheprovider 2>&1 | tail -40 | tee "$out/tests.txt"
fi
for s in "${suites[@]}"; do
  timeout "${BENCH_TIMEOUT:-400}" python3 -m tasks.cli bench $s --out "$out" 2>&1 | grep -v "^bench " | tee -a "$out/bench.txt"
done
