#!/usr/bin/env bash
# The GPU session behind the committed results: a short bf16 training run on one GPU and on two
# (DDP), then the benchmark suites, each under its own time limit (JSON is written after every
# row, so a suite cut short keeps what it measured). Usage: bash benchmarks/gpu_session.sh OUTDIR
set -uo pipefail
out=${1:?output folder}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
log=$out/log.txt
nvidia-smi --query-gpu=name,driver_version --format=csv >>"$log"
python3 -c "import torch, triton, timm, lightning; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__)" >>"$log" 2>&1
fit="python3 -m tasks.cli fit -c configs/quickstart.yaml -c configs/trainer/gpu.yaml --data.init_args.num_workers 4 --trainer.max_epochs ${EPOCHS:-5} --trainer.enable_progress_bar false"
echo "== train 1 GPU" >>"$log"; timeout ${T_TRAIN:-75} $fit >>"$log" 2>&1; cp runs/quickstart/metrics.json "$out/train_1gpu.json"
rm -rf runs/quickstart
echo "== train 2 GPUs DDP" >>"$log"; timeout ${T_DDP:-85} $fit --trainer.devices 2 --trainer.strategy ddp >>"$log" 2>&1; cp runs/quickstart/metrics.json "$out/train_2gpu_ddp.json"
bench="python3 -m tasks.cli bench --out $out --warmup-ms 10 --rep-ms 50"
echo "== bench na" >>"$log"; timeout ${T_NA:-190} $bench na --only foveal "sdpa-cudnn (dense)" "flex (tiled tokens)" >>"$log" 2>&1
echo "== bench models" >>"$log"; timeout ${T_MODELS:-110} $bench models --model biformer_tiny convnext_tiny van_b0 >>"$log" 2>&1
echo "== bench lka" >>"$log"; timeout ${T_LKA:-80} $bench lka >>"$log" 2>&1
tail -c 6000 "$log"
