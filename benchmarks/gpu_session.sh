#!/usr/bin/env bash
# The GPU session behind the committed results, in parts (each fits one 10-minute call):
#   bash benchmarks/gpu_session.sh OUTDIR ops     # bf16 correctness check, BRA per-kernel times, bra suite, models suite
#   bash benchmarks/gpu_session.sh OUTDIR na      # na suite (with Flex and cuDNN peers), lka suite
#   bash benchmarks/gpu_session.sh OUTDIR tests   # the kernel test files on CUDA (pytest travels in .whl/)
#   [BASE=<ops copy>] bash benchmarks/gpu_session.sh OUTDIR van   # VAN: host vs GPU time (probe11), the
#                                                 # LKA kernels against BASE (probe78), models eager and
#                                                 # under CUDA graphs (~8 min together: leave out probe78)
#   BASE=<ops copy> bash benchmarks/gpu_session.sh OUTDIR ab   # NA kernels against another copy of ops, same
#                                                 # process (probe39, forward and forward+backward), then
#                                                 # the forward's box/config sweep (probe43 --boxes)
#   (an ops copy: git archive <commit> ops | tar -x -C <folder>, carried to the GPU machine)
# Set FOVEAL_GIT_COMMIT=<hash> when the GPU copy has no (or a stale) .git: the JSON records it.
# .whl/ (not in git; carry it) holds what the GPU image lacks: pip download --no-deps --only-binary=:all:
#   --python-version 3.12 -d .whl jsonargparse docstring-parser typeshed-client pytest pluggy iniconfig pygments
#   pytest-xdist execnet (the tests part runs 8 pytest workers when xdist is there: Triton's compiles, not the GPU,
#   bound the serial run, ~530 s against ~143 s in session 16)
# Every suite runs under its own time limit and writes its JSON after each row, so a suite cut
# short keeps what it measured. Logs go to OUTDIR/log-<part>.txt.
set -uo pipefail
out=${1:?output folder}; part=${2:?part: ops, na, van, tests or ab}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -d .whl ]; then  # packages the GPU image lacks travel as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
log=$out/log-$part.txt
nvidia-smi --query-gpu=name,driver_version --format=csv >>"$log"
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)" >>"$log" 2>&1
bench="python3 -m tasks.cli bench --out $out --warmup-ms 10 --rep-ms 60"
if [ "$part" = tests ]; then  # the interpreter does not show every GPU bug (session 3: region_topk)
  echo "== tests" >>"$log"
  files="tests/ops/test_tuning.py tests/ops/test_eager_dispatch.py tests/ops/test_routing_kernels.py
    tests/ops/test_routing.py tests/ops/test_lka.py tests/ops/test_neighborhood.py tests/ops/test_na_tiling.py
    tests/ops/test_na1d_slice.py tests/zoo/test_neighborhood_layers.py"
  workers=""; python3 -c "import xdist" 2>/dev/null && workers="-n 8"
  # the big-memory tests (2**31-element batches, 66,000 (batch, head) pairs) run alone, after the rest
  FOVEAL_QUICK_TUNE=1 timeout ${T_TESTS:-400} python3 -m pytest -q $workers -p no:cacheprovider --tb=short $files \
    -k "not 2_31 and not 65535" >>"$log" 2>&1
  FOVEAL_QUICK_TUNE=1 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short $files -k "2_31 or 65535" >>"$log" 2>&1
elif [ "$part" = ab ]; then
  base=$(cd "${BASE:?BASE=<folder holding another copy of ops>}" && pwd)
  echo "== probe39 forward" >>"$log"; (cd benchmarks/probe && timeout ${T_PROBE:-120} python3 probe39.py "$base" >>"$log" 2>&1)
  echo "== probe39 --backward" >>"$log"; (cd benchmarks/probe && timeout ${T_PROBE_BWD:-240} python3 probe39.py "$base" --backward >>"$log" 2>&1)
  echo "== probe43 --boxes" >>"$log"; timeout ${T_PROBE:-120} python3 benchmarks/probe/probe43.py --boxes >>"$log" 2>&1
elif [ "$part" = van ]; then
  echo "== probe11" >>"$log"; timeout ${T_PROBE:-80} python3 benchmarks/probe/probe11.py van_b0 >>"$log" 2>&1
  # the LKA kernels against another copy of ops in one process, when BASE names one (probe78)
  [ -n "${BASE:-}" ] && { echo "== probe78" >>"$log"; timeout ${T_PROBE:-240} python3 benchmarks/probe/probe78.py \
    "$BASE" convs lka >>"$log" 2>&1; }
  echo "== bench models" >>"$log"; timeout ${T_MODELS:-150} $bench --rep-ms 200 models --model van_b0 van_b2 >>"$log" 2>&1
  # its own folder: both runs write models-<device>-<date>.json (session 32 lost the eager JSON so);
  # compiling both models' four graphs takes most of a 10-minute call (session 32: cut at 300 s)
  echo "== bench models, CUDA graphs" >>"$log"; timeout ${T_GRAPHS:-420} python3 -m tasks.cli bench --out "$out/graphs" \
    --warmup-ms 10 --rep-ms 100 models --model van_b0 van_b2 --compile reduce-overhead >>"$log" 2>&1
elif [ "$part" = ops ]; then
  [ -z "${SKIP_CHECK:-}" ] && { echo "== gpu_check" >>"$log"; timeout ${T_CHECK:-170} python3 benchmarks/gpu_check.py >>"$log" 2>&1; }
  echo "== bra kernel times" >>"$log"; timeout ${T_PROBE:-90} python3 benchmarks/probe/probe10.py >>"$log" 2>&1
  echo "== bench bra" >>"$log"; timeout ${T_BRA:-150} $bench bra >>"$log" 2>&1
  echo "== bench models" >>"$log"; timeout ${T_MODELS:-230} $bench --rep-ms 300 models --model biformer_tiny van_b0 van_b2 swin_tiny_patch4_window7_224 convnext_tiny >>"$log" 2>&1
else
  [ -f benchmarks/probe/probe2.py ] && { echo "== bra probe" >>"$log"; timeout 60 python3 benchmarks/probe/probe2.py >>"$log" 2>&1; }
  echo "== bench na" >>"$log"; timeout ${T_NA:-400} $bench na --only foveal "sdpa-cudnn (dense)" "flex (tiled tokens)" >>"$log" 2>&1
  echo "== bench lka" >>"$log"; timeout ${T_LKA:-150} $bench lka >>"$log" 2>&1
fi
grep -v "^bench \|Warning\|warn(" "$log" | tail -c 9000
