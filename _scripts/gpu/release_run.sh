#!/usr/bin/env bash
# Train the release models side by side on one GPU machine and evaluate them, in three phases, each one
# invocation of this script on the same machine (its disk is kept between them):
#
#   PHASE=data_train  _scripts/gpu/release_run.sh   # synth N characters, render head + body framing, split;
#                                                   # start the trainings (setsid: they outlive this invocation)
#                                                   # as soon as their framing's data is ready; build the
#                                                   # evaluation sets (results_eval.sh STEPS=data) meanwhile
#   PHASE=monitor     _scripts/gpu/release_run.sh   # progress; bf16 G_ema exports of the snapshots so far
#   PHASE=collect     _scripts/gpu/release_run.sh   # wait for the trainings to end (STOP=now: stop them), export,
#                                                   # generate + measure on the held-out and real characters,
#                                                   # figures, logs
#
# Recipes: _configs/recipes/release/<model>.toml.  An export is made of the run's best snapshot on the recipe's
# snap_keep_best metric (held-out side views), else of the newest.  Parameters (environment variables):
#   MODELS        models to train (default: panic_head panic_body nova_v1)
#   N             synthetic characters per framing (default 2000); HEAD_SIZE / BODY_SIZE render sizes (256 / 256)
#   TRAIN_END_S   the trainings stop this many seconds after data_train started (--minutes: snapshot, exit);
#                 a training that fails (say, while compiling) is retried once without torch.compile
#   CALL_S        how long one invocation may run before it returns (data_train and monitor)
#   RESUME_DIR    folder of <model>.pt exports to continue from (a run restarts from G_ema), or "release": the
#                 registered release files (_configs/release.toml)
#   EVAL_MODELS   models to evaluate in collect (default MODELS); one not trained here is taken from RESUME_DIR
#   EVAL_N        held-out characters per framing to evaluate (default 120; 0: no evaluation on this machine);
#                 REAL: the real characters' folder
#   EVAL_S        the longest the evaluation in collect may take (default 3600; the tables finished by then stay)
#   DEST          where exports, tables, figures and logs are written (default /tmp/out)
#   PY            the Python with PyTorch (default python3); WORKERS data loader processes per run (default 4)
#   DEVICE        where the evaluation runs (default cuda)
#   TRAIN_ARGS    extra trainer flags for every run (e.g. --no-compile, --batch 32)
# The GPU machine needs the wheels of _scripts/gpu/wheels.sh (trimesh, pygltflib, moderngl, kornia, ...) on its
# PYTHONPATH and EGL (libEGL, libOpenGL) for the renderer.
set -uo pipefail
cd "$(dirname "$0")/../.."
PHASE=${PHASE:?PHASE=data_train|monitor|collect}
MODELS=${MODELS:-panic_head panic_body nova_v1}
N=${N:-2000}; HEAD_SIZE=${HEAD_SIZE:-256}; BODY_SIZE=${BODY_SIZE:-256}
CALL_S=${CALL_S:-570}; TRAIN_END_S=${TRAIN_END_S:-1200}
EVAL_MODELS=${EVAL_MODELS:-$MODELS}; EVAL_S=${EVAL_S:-3600}; EVAL_N=${EVAL_N:-120}; REAL=${REAL:-.real}; WORKERS=${WORKERS:-4}; DEVICE=${DEVICE:-cuda}
DEST=${DEST:-/tmp/out}; PY=${PY:-python3}
export LUSTROUS_DATA_ROOT=${LUSTROUS_DATA_ROOT:-/tmp/lustrous} PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
ROOT=$LUSTROUS_DATA_ROOT; RUNS=$ROOT/runs; STATE=$ROOT/release_state; EVAL=$ROOT/eval; RESULTS=$ROOT/results
mkdir -p "$DEST" "$RUNS" "$STATE" "$RESULTS"
T0=$(cat "$STATE/t0" 2>/dev/null || date +%s)
log() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
framing_of() { [ "$1" = panic_head ] && echo head || echo body; }
size_of() { [ "$1" = head ] && echo "$HEAD_SIZE" || echo "$BODY_SIZE"; }

start_training() {   # model: a process session of its own (it outlives this invocation) until TRAIN_END_S
    setsid nohup env PHASE=train MODEL="$1" bash "$0" > "$STATE/$1.log" 2>&1 < /dev/null &
    echo $! > "$STATE/$1.pid"
    log "$1: training until $TRAIN_END_S s"
}

minutes_left() { $PY -c "import sys, time; print(max((int(sys.argv[1]) - time.time()) / 60, 0.05))" "$(( T0 + TRAIN_END_S ))"; }

resume_file() {   # model: the export a run continues from (RESUME_DIR/<model>.pt, or the registered release)
    if [ "${RESUME_DIR:-}" = release ]; then
        $PY -c "from training.infer.release import released_checkpoint as r; print(r('$1')[1])" 2>/dev/null
    elif [ -n "${RESUME_DIR:-}" ] && [ -f "$RESUME_DIR/$1.pt" ]; then
        echo "$RESUME_DIR/$1.pt"
    fi
}

train_model() {   # model: the trainer until TRAIN_END_S (--minutes); a run that fails is retried once, eager
    local m=$1 from args
    args=(--config "release/$m" --runs-dir "$RUNS" --workers "$WORKERS" --no-progress ${TRAIN_ARGS:-})
    from=$(resume_file "$m"); [ -n "$from" ] && args+=(--resume "$from")
    $PY -m _train.eg3dc.train "${args[@]}" --minutes "$(minutes_left)" && return
    log "$m: the trainer failed (exit $?); once more without torch.compile, from its latest snapshot"
    from=$(latest_snapshot "$m"); [ -n "$from" ] && args+=(--resume "$from")
    $PY -m _train.eg3dc.train "${args[@]}" --no-compile --minutes "$(minutes_left)"
}

data_for() {   # framing: render, clean, split
    local F=$1
    $PY -m _scripts.data.render --source synth --renderset "synth_$F" --framing "$F" --size "$(size_of "$F")" \
        --workers "$(( $(nproc) - 1 ))" 2>&1 | tr '\r' '\n' | grep -v '%|' | tail -2
    $PY -m _scripts.train.data_clean --dataset "synth_$F" --phase all --quiet --workers "$(nproc)" | tail -2
    [ -s "$ROOT/subsets/synth_${F}_train.csv" ] || { log "data for $F failed";
        head -c 600 "$ROOT/renders/synth_$F/failures.jsonl" 2>/dev/null; return 1; }
    log "data $F: $(wc -l < "$ROOT/subsets/synth_${F}_train.csv") train / $(wc -l < "$ROOT/subsets/synth_${F}_test.csv") test"
}

latest_snapshot() { ls -1 "$RUNS/$1"/0*/network-snapshot-*.pt 2>/dev/null | sort | tail -1; }

release_snapshot() {   # model: the snapshot its export is made of: the best on the recipe's --snap-keep-best
    local d; d=$(ls -1d "$RUNS/$1"/0* 2>/dev/null | tail -1)        # metric, else the newest
    [ -n "$d" ] && $PY -c "import sys; from training.run.snapshots import release_choice as c; print(c(sys.argv[1]) or '')" "$d"
}

export_all() {   # suffix: bf16 G_ema exports (what the release ships and a next run resumes from)
    for m in $MODELS; do
        s=$(release_snapshot "$m"); [ -n "$s" ] || { log "$m: no snapshot yet"; continue; }
        $PY -m training.checkpoint export-bf16 "$s" "$DEST/$m$1.pt" --keep G_ema | sed "s|^|$m: $(basename "$s") -> |"
    done
}

status() {
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    for m in $MODELS; do
        d=$(ls -1d "$RUNS/$m"/0* 2>/dev/null | tail -1)
        [ -f "$d/metrics.jsonl" ] && tail -1 "$d/metrics.jsonl" | $PY -c "
import json, sys
r = json.loads(sys.stdin.read())
print('$m', {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()
             if k in ('kimg', 'sec_per_kimg', 'gpu_mem_gb', 'ray/psnr', 'ray/depth', 'nan_skips', 'val/psnr_front', 'val/psnr_back', 'val/psnr_side', 'val/psnr_rgb')})"
        grep -iE "error|traceback|first step|failed" "$STATE/$m.log" | tail -3
    done
}

pack() {
    tar czf "$DEST/release_logs.tar.gz" -C "$ROOT" release_state results \
        $(cd "$ROOT" && ls -d runs/*/0*/metrics.jsonl runs/*/0*/config.json 2>/dev/null; for d in "$ROOT"/runs/*/0*; do
          ls -1 "$d"/preview-*.png 2>/dev/null | tail -1 | sed "s|^$ROOT/||"; done) 2>/dev/null
    ls -la "$DEST"
}

case $PHASE in
train)      # one model (started by data_train)
    train_model "${MODEL:?}"
    ;;
data_train)
    echo "$T0" > "$STATE/t0"
    P=$(nproc); per=$(( (N + P - 1) / P ))
    for i in $(seq 0 $(( P - 1 ))); do
        $PY -m _scripts.data.synth --n "$per" --start $(( i * per )) --seed 0 >/dev/null 2>"$STATE/synth_$i.err" &
    done; wait
    log "synth: $(find "$ROOT/raw/synth" -name '*.glb' | wc -l) characters"
    # the framings of the models being trained first, so that their trainings start as early as possible
    FRAMINGS=$(for m in $MODELS; do framing_of "$m"; done | awk '!seen[$0]++' | tr '\n' ' ')
    # the other framing's data only for the evaluation sets
    [ "$EVAL_N" -gt 0 ] && for F in head body; do [[ " $FRAMINGS " == *" $F "* ]] || FRAMINGS+="$F "; done
    for F in $FRAMINGS; do
        data_for "$F" || exit 1
        for m in $MODELS; do [ "$(framing_of "$m")" = "$F" ] && start_training "$m"; done
    done
    # the evaluation sets, on the cores the data loaders leave (setsid: it may outlive this invocation)
    [ "$EVAL_N" -gt 0 ] && CKPTS=$DEST STEPS=data EVAL_N=$EVAL_N N_TOTAL=$N HEAD_SIZE=$HEAD_SIZE BODY_SIZE=$BODY_SIZE REAL=$REAL WORKERS=4 \
        PY=$PY EVAL_ROOT=$EVAL RESULTS=$RESULTS setsid nohup bash -c 'bash _scripts/eval/results_eval.sh; echo "exit $?"' \
        > "$STATE/eval_data.log" 2>&1 < /dev/null &
    log "data: $(du -sh "$ROOT/renders" | cut -f1) of renders" | tee "$DEST/data_timing.txt"
    while [ $(( $(date +%s) - T0 )) -lt "$CALL_S" ]; do sleep 45; status; done
    tail -3 "$STATE/eval_data.log" 2>/dev/null
    export_all _mid     # the machine may not be the same at the next invocation: keep what was trained so far
    ;;
monitor)
    t1=$(date +%s)
    while [ $(( $(date +%s) - t1 )) -lt $(( CALL_S - 40 )) ]; do sleep 60; status; done
    grep -E "test ids|exit" "$STATE/eval_data.log" 2>/dev/null
    export_all _mid
    ;;
collect)
    [ -f "$STATE/t0" ] || { log "no run state under $STATE: PHASE=data_train has not run on this machine"; exit 2; }
    # the trainings end at TRAIN_END_S by themselves; STOP=now ends them at once (a snapshot each)
    [ "${STOP:-}" = now ] && for m in $MODELS; do
        [ -f "$STATE/$m.pid" ] && kill -TERM -- "-$(cat "$STATE/$m.pid")" 2>/dev/null; done
    for m in $MODELS; do
        while [ -f "$STATE/$m.pid" ] && kill -0 "$(cat "$STATE/$m.pid")" 2>/dev/null; do sleep 3; done
        log "$m finished: $(grep -v '^\s*$' "$STATE/$m.log" | tail -1 | cut -c1-300)"
    done
    status
    rm -f "$DEST"/*_mid.pt
    export_all ""
    for m in $EVAL_MODELS; do     # evaluated but not trained here: the export it would have resumed from
        [ -f "$DEST/$m.pt" ] || [ ! -f "${RESUME_DIR:-/nonexistent}/$m.pt" ] || cp "$RESUME_DIR/$m.pt" "$DEST/$m.pt"
    done
    pack      # logs and metrics first: the evaluation below may run out of time
    [ "$EVAL_N" -gt 0 ] || { log "EVAL_N=0: no evaluation here"; exit 0; }
    while [ -f "$STATE/eval_data.log" ] && ! grep -q "^exit " "$STATE/eval_data.log"; do sleep 5; done   # sets complete
    grep -q "^exit 0" "$STATE/eval_data.log" || { log "evaluation sets failed:"; tail -5 "$STATE/eval_data.log"; }
    timeout -s TERM "$EVAL_S" env CKPTS=$DEST STEPS=models MODELS="$EVAL_MODELS" EVAL_N=$EVAL_N REAL=$REAL DEVICE=$DEVICE JOBS=6 PY=$PY EVAL_ROOT=$EVAL \
        RESULTS=$RESULTS bash _scripts/eval/results_eval.sh > "$RESULTS/results_eval.log" 2>&1
    log "eval: exit $?"; cat "$RESULTS/table.md"
    cp "$RESULTS"/table.md "$DEST"/      # figures and per-character JSON travel in the logs archive
    pack
    ;;
esac
