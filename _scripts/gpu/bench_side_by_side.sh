#!/usr/bin/env bash
# Several model benchmarks on one GPU in one job: they compile side by side (compiling is CPU work, minutes
# per CUDA-graph configuration on a fresh machine), then time one at a time (--gpu-lock: a lock file, and a
# barrier so that no first step, compiling and autotuning on the GPU, runs beside a timing).  Each gets its
# own inductor cache; logs and JSON go to $DEST/NAME.log and $DEST/NAME.json.  Each is stopped after
# TIMEOUT_S seconds (two EG3D-sized configurations compile and time in about 10 minutes; three take longer).
#   DEST=/tmp/out TIMEOUT_S=570 _scripts/gpu/bench_side_by_side.sh "nr64|--nr 64 --profile" "nr128|--nr 128"
# Every benchmark gets $COMMON (default: the EG3D-equivalent training step, compiled with CUDA graphs) before
# its own arguments.
set -uo pipefail
cd "$(dirname "$0")/../.."
DEST=${DEST:-/tmp/out}; PY=${PY:-python3}; TIMEOUT_S=${TIMEOUT_S:-570}
COMMON=${COMMON:-"--config eg3d_ffhq512 --device cuda --compile on --compile-mode reduce-overhead \
--train-only --steps 16 --warmup 2 --phase-times"}
[ $# -gt 0 ] || { echo "usage: $0 'NAME|ARGS' ['NAME|ARGS' ...]" >&2; exit 2; }
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
LOCK=$(mktemp -u /tmp/bench_gpu_lock.XXXXXX)
i=0
for spec in "$@"; do
    name=${spec%%|*}; args=${spec#*|}
    # staggered starts: the eager FLOP count runs under the lock too, one at a time
    TORCHINDUCTOR_CACHE_DIR=/tmp/inductor_$name timeout -k 5 $((TIMEOUT_S - 10 * i)) $PY -m _scripts.bench.models \
        $COMMON $args --gpu-lock "$LOCK" --gpu-lock-peers $# --json "$DEST/$name.json" > "$DEST/$name.log" 2>&1 &
    i=$((i + 1)); [ "$i" -lt $# ] && sleep 10
done
wait
for spec in "$@"; do
    name=${spec%%|*}
    echo "=== $name"; grep -h "preset=\|step:\|train step\|first step\|phases\|error" "$DEST/$name.log"
done
rm -f "$LOCK" "$LOCK".ready.*
