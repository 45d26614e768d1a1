#!/usr/bin/env bash
# Every GPU measurement the open issues ask for, in one go, on a machine with a CUDA card and
# PyTorch but no tudui install (the lent H100/H200: run it from the repository's root).
#   bash benchmarks/gpu.sh path/to/cifar10-jpeg.tar.gz [path/to/airbench94_muon.py]
# STEPS picks and orders the parts (default: all, in this order):
#   tests     the CUDA tests (tests/e2e/test_gpu.py)
#   race      the record's own script beside the fast recipe, same card, same copy (record_race.py;
#             needs the record's file, which is never part of tudui: keep it in a git-ignored folder)
#   recipes   the fast recipe at other settings (time_to_accuracy.py; RECIPES, one "--set ..." list per line)
#   start     whole `tudui train` processes: the second one timed from start to exit; --help, models
#   serve     benchmarks/serve_load.py on the GPU (needs fastapi, uvicorn, python-multipart: carry wheels)
#   ddp       benchmarks/distributed.py: one GPU plain against one GPU under torchrun (DDP's own cost)
# JSON lines and logs go to $OUT (default ./bench-out), the summaries to the terminal.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/cifar10-jpeg.tar.gz}
RECORD=${2:-}
OUT=${OUT:-bench-out}
STEPS=${STEPS:-tests race recipes start serve ddp}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export TUDUI_CACHE=${TUDUI_CACHE:-/tmp/tudui-cache}
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
# Decode the copy once (untimed), so every timed part finds the cache as a user's second run does.
$PY -c "import sys; from tudui.data import build_dataset, decode_to_tensor; from tudui.files import cache_root
spec = build_dataset(sys.argv[1]); [decode_to_tensor(s, 32, cache_root() / 'tensors') for s in (spec.train, spec.test)]" "$DATA"

step_tests() {
    timeout 150 $PY -m pytest -q -p no:cacheprovider tests/e2e/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log" | tail -3
}
step_race() {
    [ -n "$RECORD" ] || { echo "race: no record script given (second argument)"; return; }
    local record data config   # absolute: record_race.py runs from benchmarks/
    record=$(realpath "$RECORD") && data=$(realpath "$DATA") &&
        config=$(realpath "${RACE_CONFIG:-configs/cifar10-fast.yaml}") || return
    (cd benchmarks && timeout 420 $PY record_race.py --record "$record" --data "$data" --runs "${RUNS:-5}" \
        --config "$config" ${RACE_SET:+--set $RACE_SET}) \
        >"$OUT/race.jsonl" 2>"$OUT/race.err"
    echo "== race (exit $?)"; grep '"summary": true' "$OUT/race.jsonl"; tail -3 "$OUT/race.err"
}
step_recipes() {
    local i=0
    while IFS= read -r sets; do
        [ -n "$sets" ] || continue
        i=$((i + 1))
        timeout 240 $PY benchmarks/time_to_accuracy.py --data "$DATA" --device cuda --recipes fast \
            --seeds ${SEEDS:-0 1 2 3 4} --out /tmp/tudui-bench --set $sets >"$OUT/recipe$i.jsonl" 2>"$OUT/recipe$i.err"
        echo "== recipe $i: $sets (exit $?)"; tail -1 "$OUT/recipe$i.err"
    done <<<"${RECIPES:-epochs=10
optimizer=muon whiten_bias_epochs=3 epochs=8 muon_steps=3
optimizer=muon whiten_bias_epochs=3 epochs=8 muon_steps=3 compile=true
optimizer=muon whiten_bias_epochs=3 epochs=8 muon_steps=3 compile=true progressive_size=24 progressive_epochs=3}"
}
step_start() {
    local TIMEFORMAT
    for i in 1 2; do
        TIMEFORMAT="whole process %R s (run $i)"
        time ($PY -m tudui train --config configs/cifar10-fast.yaml --data "$DATA" --epochs 10 \
            --project /tmp/tudui-start >"$OUT/start$i.log" 2>&1)
        tail -3 "$OUT/start$i.log"
    done
    TIMEFORMAT="tudui --help %R s"; time ($PY -m tudui --help >/dev/null)
    for i in 1 2; do TIMEFORMAT="tudui models %R s (run $i)"; time ($PY -m tudui models >/dev/null); done
}
step_serve() {
    timeout 300 $PY benchmarks/serve_load.py --device cuda --decode-workers 12 --seconds ${SERVE_SECONDS:-4} \
        >"$OUT/serve.jsonl" 2>"$OUT/serve.err"
    echo "== serve (exit $?)"; tail -20 "$OUT/serve.err"
}
step_ddp() {
    timeout 240 $PY benchmarks/distributed.py --data "$DATA" --epochs 2 >"$OUT/ddp.jsonl" 2>"$OUT/ddp.err"
    echo "== ddp (exit $?)"; grep summary "$OUT/ddp.jsonl"; tail -3 "$OUT/ddp.err"
}
for step in $STEPS; do
    echo "=== $step $(date +%T)"
    "step_$step"
done
