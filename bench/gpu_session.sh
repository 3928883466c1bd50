#!/usr/bin/env bash
# One prepared run for a lent GPU machine (the device tool): the GPU tests, the training scripts and
# the GPU bench (validation, then timings), each under its own time limit, logs and results under $OUT
# (or ./gpu-out).
#
#   run(command="bash bench/gpu_session.sh", carry=[".gpu-kernel-cache"], timeout_s=540)
#
# The machine's image has numpy 2.5 beside numba-cuda 0.30.4, which jn.device("cuda") rejects by
# name (numba-cuda still registers np.row_stack); nothing can be installed there, so a
# sitecustomize on PYTHONPATH aliases np.row_stack for these runs only. Kernels compile through
# NVVM at ~0.4 s each: JITNET_CACHE_DIR points at .gpu-kernel-cache, which a later call can carry.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" .gpu-kernel-cache
shim=$(mktemp -d)
cat > "$shim/sitecustomize.py" <<'PY'
import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
PY
export PYTHONPATH="$shim:$PWD${PYTHONPATH:+:$PYTHONPATH}" JITNET_CACHE_DIR="$PWD/.gpu-kernel-cache" JITNET_CHECK_MEMORY=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import numpy, numba, numba_cuda; print(numpy.__version__, numba.__version__, numba_cuda.__version__)" >> "$OUT/gpu.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, print the tail
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc=$rc in $((SECONDS - start)) s"
    tail -n 4 "$OUT/$name.log"
}

step tests 240 python3 -m pytest -q -p no:cacheprovider -m "cuda or gpu" --durations=15
step train_mlp 90 python3 examples/train_mlp.py --epochs 3 --quiet
step train_lenet 120 python3 examples/train_lenet.py --epochs 3 --quiet
step bench 200 python3 -m bench --device cuda --quick
cp bench/results/*cuda* "$OUT/" 2>/dev/null
cat "$OUT/gpu.txt"
