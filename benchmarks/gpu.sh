#!/usr/bin/env bash
# Every GPU measurement the open issues ask for, on a machine with a CUDA card and PyTorch but no
# tudui install (the lent H100/H200), inside a time budget. Run it from the repository's root:
#   bash benchmarks/gpu.sh path/to/cifar10-jpeg.tar.gz [path/to/airbench94_muon.py]
#
# A lent machine gives a session 15 minutes in all (its start included) and 10 per command, so the
# parts run in order of importance and the script ends by BUDGET seconds (default 540): a part
# starts only when its least time (LEAST below) is left, else it prints "skipped", and each runs
# under a timeout of the time left. Two calls fit one session: the default STEPS, then at once,
# while the machine is still warm, STEPS="serve ddp recipes" BUDGET=200.
#
# STEPS picks and orders the parts (default: race start tests serve ddp recipes):
#   race      the record's own script beside tudui's candidates, same card, same copy
#             (record_race.py; RACE: one candidate's settings per line; needs the record's file,
#             which is never part of tudui: keep it in a git-ignored folder)
#   start     whole `tudui train` processes (START_ARGS): the second timed from start to exit;
#             `tudui --help`, `tudui models`
#   tests     the CUDA tests (tests/e2e/test_gpu.py)
#   serve     benchmarks/serve_load.py (needs fastapi, uvicorn, python-multipart: wheels in .whl/)
#   ddp       benchmarks/distributed.py: one GPU plain against one GPU under torchrun
#   recipes   the fast recipe at other settings (time_to_accuracy.py; RECIPES, one list per line)
# benchmarks/gpu_prepare.sh gets a checkout ready for a lent machine and prints the call to make.
# Other knobs: DEVICE (cuda; cpu tries the plumbing out without a GPU), SEEDS, RUNS (the record's
# timed runs), RACE_SET (settings of every race candidate), SERVE_ARGS, DDP_ARGS, PYTHON.
#
# Logs go to LOGS (default /tmp/gpu-logs) and, after every part, into one file, $OUT/gpu-logs.tgz
# (OUT: default ./bench-out), since a lent machine sends back at most 8 files. Summaries go to the
# terminal.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data/cifar10-jpeg.tar.gz}") || exit 2
RECORD=${2:+$(realpath "$2")}
OUT=$(mkdir -p "${OUT:-bench-out}" && realpath "${OUT:-bench-out}")
LOGS=${LOGS:-/tmp/gpu-logs}
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-race start tests serve ddp recipes}
SEEDS=${SEEDS:-0 1 2 3 4}
declare -A LEAST=([race]=150 [start]=60 [tests]=40 [serve]=60 [ddp]=50 [recipes]=60)
mkdir -p "$LOGS"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export TUDUI_CACHE=${TUDUI_CACHE:-/tmp/tudui-cache}
PY=${PYTHON:-python3}
[[ $PY == */* ]] && PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")   # parts run from other folders
# The wheels that benchmarks/gpu_prepare.sh put in .whl/, where the service's packages are missing.
if ! $PY -c "import fastapi, uvicorn, multipart" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

left() { echo $((BUDGET - SECONDS)); }
# A timeout of at most $1 seconds that ends 10 s before the budget does.
limit() { local l=$(($(left) - 10)); echo $(($1 < l ? $1 : (l > 1 ? l : 1))); }
pack() { tar czf "$OUT/gpu-logs.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"; }

step_race() {
    [ -n "$RECORD" ] || { echo "race: no record script given (second argument)"; return; }
    local config candidates=()
    config=$(realpath "${RACE_CONFIG:-configs/cifar10-fast.yaml}") || return
    while IFS= read -r line; do [ -n "$line" ] && candidates+=(--candidate "$line"); done <<<"${RACE:-epochs=10
optimizer=muon whiten_bias_epochs=3 epochs=8 muon_steps=3
optimizer=muon whiten_bias_epochs=3 epochs=8 muon_steps=3 batch_size=2000 muon_lr=0.24}"
    # record_race.py runs from benchmarks/ (it imports its neighbours); every path is absolute.
    (cd benchmarks && timeout "$(limit 600)" $PY record_race.py --record "$RECORD" --data "$DATA" \
        --runs "${RUNS:-5}" --seeds $SEEDS --config "$config" --device "$DEVICE" "${candidates[@]}" \
        ${RACE_SET:+--set $RACE_SET}) >"$LOGS/race.jsonl" 2>"$LOGS/race.err"
    echo "== race (exit $?)"; grep -E "^(record:|tudui )" "$LOGS/race.err"; grep -v -E "^(record:|tudui )" "$LOGS/race.err" | tail -3
}
step_start() {
    local TIMEFORMAT i
    for i in 1 2; do
        TIMEFORMAT="whole process %R s (run $i)"
        time (timeout "$(limit 200)" $PY -m tudui train --config configs/cifar10-fast.yaml --data "$DATA" \
            --device "$DEVICE" ${START_ARGS:---epochs 10} --project /tmp/tudui-start >"$LOGS/start$i.log" 2>&1)
        tail -2 "$LOGS/start$i.log"
    done
    TIMEFORMAT="tudui --help %R s"; time ($PY -m tudui --help >/dev/null)
    for i in 1 2; do TIMEFORMAT="tudui models %R s (run $i)"; time ($PY -m tudui models >/dev/null); done
}
step_tests() {
    timeout "$(limit 150)" $PY -m pytest -q -p no:cacheprovider tests/e2e/test_gpu.py >"$LOGS/gpu-tests.log" 2>&1
    echo "== tests (exit $?)"; tail -3 "$LOGS/gpu-tests.log"
}
step_serve() {
    timeout "$(limit 300)" $PY benchmarks/serve_load.py --device "$DEVICE" \
        ${SERVE_ARGS:---decode-workers 12 --seconds 4} >"$LOGS/serve.jsonl" 2>"$LOGS/serve.err"
    echo "== serve (exit $?)"; tail -22 "$LOGS/serve.err"
}
step_ddp() {
    timeout "$(limit 240)" $PY benchmarks/distributed.py --data "$DATA" ${DDP_ARGS:---epochs 2} \
        >"$LOGS/ddp.jsonl" 2>"$LOGS/ddp.err"
    echo "== ddp (exit $?)"; grep summary "$LOGS/ddp.jsonl"; tail -3 "$LOGS/ddp.err"
}
step_recipes() {
    local i=0 sets
    while IFS= read -r sets; do
        [ -n "$sets" ] || continue
        i=$((i + 1))
        (($(left) > ${LEAST[recipes]})) || { echo "== recipe $i skipped: $(left) s left"; continue; }
        timeout "$(limit 240)" $PY benchmarks/time_to_accuracy.py --data "$DATA" --device "$DEVICE" --recipes fast \
            --seeds $SEEDS --out /tmp/tudui-bench --set $sets >"$LOGS/recipe$i.jsonl" 2>"$LOGS/recipe$i.err"
        echo "== recipe $i: $sets (exit $?)"; tail -1 "$LOGS/recipe$i.err"
    done <<<"${RECIPES:-optimizer=muon whiten_bias_epochs=3 epochs=8 muon_steps=3 compile=true
optimizer=muon whiten_bias_epochs=3 epochs=8 muon_steps=3 compile=true progressive_size=24 progressive_epochs=3}"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  git log -1 --format='commit %h %s' 2>/dev/null; } | tee "$LOGS/machine.txt"
# Decode the copy once (untimed), so every timed part finds the cache as a user's second run does.
$PY -c "import sys; from tudui.data import build_dataset, decode_to_tensor; from tudui.files import cache_root
spec = build_dataset(sys.argv[1]); [decode_to_tensor(s, 32, cache_root() / 'tensors') for s in (spec.train, spec.test)]" \
    "$DATA" || exit 1
echo "=== data decoded in $SECONDS s"
for step in $STEPS; do
    [ -n "${LEAST[$step]:-}" ] || { echo "=== $step: no such part (race start tests serve ddp recipes)"; continue; }
    if (($(left) < LEAST[$step])); then
        echo "=== $step skipped: $(left) s left of BUDGET=$BUDGET, it needs ${LEAST[$step]}"
        continue
    fi
    echo "=== $step $(date +%T), $(left) s left"
    "step_$step"
    pack
done
pack
echo "=== done in $SECONDS s; logs in $OUT/gpu-logs.tgz"
