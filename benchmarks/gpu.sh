#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA card and PyTorch but no tudui install:
# the CUDA tests, then time to accuracy on the CIFAR-10 copy at several lengths, eager and
# compiled. JSON lines go to $OUT (default ./bench-out), the last lines to the terminal.
#   bash benchmarks/gpu.sh path/to/cifar10-jpeg.tar.gz
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export TUDUI_CACHE=${TUDUI_CACHE:-/tmp/tudui-cache}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/e2e/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log" | tail -5
bench() {  # name, then time_to_accuracy.py arguments
    local name=$1; shift
    timeout 200 python3 benchmarks/time_to_accuracy.py --data "$DATA" --device cuda --recipes fast \
        --out /tmp/tudui-bench "$@" >"$OUT/$name.jsonl" 2>"$OUT/$name.err"
    echo "== $name (exit $?)"
    tail -2 "$OUT/$name.err"
}
SEEDS=${SEEDS:-0 1 2 3 4}
for epochs in ${EPOCHS:-10 12}; do
    bench "eager-$epochs" --seeds $SEEDS --set epochs=$epochs
done
for epochs in ${COMPILE_EPOCHS:-12}; do
    bench "compiled-$epochs" --seeds ${COMPILE_SEEDS:-$SEEDS} --set epochs=$epochs compile=true
done
