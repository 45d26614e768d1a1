#!/usr/bin/env bash
# Gets a checkout ready for benchmarks/gpu.sh on a lent GPU machine that has PyTorch but cannot
# reach the internet: copies the data and the record's script into .gpu/, downloads the wheels the
# prediction service needs there into .whl/ (both git-ignored through .git/info/exclude), and
# prints the command to run there, naming both folders to carry along.
#   bash benchmarks/gpu_prepare.sh path/to/cifar10-jpeg.tar.gz [path/to/airbench94_muon.py]
# The wheels are for CPython 3.12 on x86-64 Linux (the lent machines' Python): FastAPI, uvicorn and
# python-multipart with everything they need, so they import on a bare Python 3.12 too (the lent
# machine's list has anyio, h11, click, ... but not their versions; pydantic wants a recent
# typing-extensions). Tried: installed as gpu.sh installs them, they import on a CPython 3.12 here.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?the CIFAR-10 copy (cifar10-jpeg.tar.gz)}
RECORD=${2:-}
PY=${PYTHON:-python3}
for folder in /.gpu/ /.whl/; do
    grep -qxF "$folder" .git/info/exclude 2>/dev/null || echo "$folder" >>.git/info/exclude
done
mkdir -p .gpu .whl
cp "$DATA" .gpu/cifar10-jpeg.tar.gz
[ -z "$RECORD" ] || cp "$RECORD" .gpu/airbench94_muon.py
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    fastapi starlette pydantic pydantic-core annotated-types typing-inspection opentelemetry-api \
    importlib-metadata zipp uvicorn python-multipart annotated-doc anyio idna h11 click typing-extensions
du -sh .gpu .whl
echo "device run: command=\"bash benchmarks/gpu.sh .gpu/cifar10-jpeg.tar.gz${RECORD:+ .gpu/airbench94_muon.py}\"" \
    "carry=[\".gpu\", \".whl\"] timeout_s=590; then at once, while it is warm:" \
    "STEPS=\"serve ddp recipes\" BUDGET=200 with the same carry"
