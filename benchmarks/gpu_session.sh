#!/usr/bin/env bash
# The GPU session behind the committed results, in two parts (each fits one 10-minute call):
#   bash benchmarks/gpu_session.sh OUTDIR ops     # bf16 correctness check, bra suite, models suite
#   bash benchmarks/gpu_session.sh OUTDIR na      # na suite (with Flex and cuDNN peers), lka suite
# Every suite runs under its own time limit and writes its JSON after each row, so a suite cut
# short keeps what it measured. Logs go to OUTDIR/log-<part>.txt.
set -uo pipefail
out=${1:?output folder}; part=${2:?part: ops or na}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -d .whl ]; then  # packages the GPU image lacks travel as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
log=$out/log-$part.txt
nvidia-smi --query-gpu=name,driver_version --format=csv >>"$log"
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)" >>"$log" 2>&1
bench="python3 -m tasks.cli bench --out $out --warmup-ms 10 --rep-ms 60"
if [ "$part" = ops ]; then
  [ -z "${SKIP_CHECK:-}" ] && { echo "== gpu_check" >>"$log"; timeout ${T_CHECK:-170} python3 benchmarks/gpu_check.py >>"$log" 2>&1; }
  echo "== bench bra" >>"$log"; timeout ${T_BRA:-150} $bench bra >>"$log" 2>&1
  echo "== bench models" >>"$log"; timeout ${T_MODELS:-230} $bench --rep-ms 300 models --model biformer_tiny van_b0 van_b2 swin_tiny_patch4_window7_224 convnext_tiny >>"$log" 2>&1
else
  [ -f benchmarks/probe/probe2.py ] && { echo "== bra probe" >>"$log"; timeout 60 python3 benchmarks/probe/probe2.py >>"$log" 2>&1; }
  echo "== bench na" >>"$log"; timeout ${T_NA:-400} $bench na --only foveal "sdpa-cudnn (dense)" "flex (tiled tokens)" >>"$log" 2>&1
  echo "== bench lka" >>"$log"; timeout ${T_LKA:-150} $bench lka >>"$log" 2>&1
fi
grep -v "^bench \|Warning\|warn(" "$log" | tail -c 9000
