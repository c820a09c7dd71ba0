#!/usr/bin/env bash
# GPU results (issue 7, docs/results.md): one dataset, four models trained side by side for equal GPU time,
# in three device calls on one held machine (each call <= 10 min; the machine keeps its disk between calls).
#
#   PHASE=data_train  _scripts/gpu/results_run.sh   # synth N characters, render head + body framing, clean,
#                                                   # masks; start the four trainings (setsid, run until DEADLINE)
#   PHASE=monitor     _scripts/gpu/results_run.sh   # progress; bf16 exports of the latest snapshots to $OUT (safety)
#   PHASE=collect     _scripts/gpu/results_run.sh   # wait for the deadline, export G_ema + D in bf16 (< 16 MiB),
#                                                   # generate + measure on the held-out test split, pack logs
#
# Models (presets *_small of training/triplane.py; GAN + L1/alpha/depth/TV losses; LPIPS off: no weights there):
#   panic_head  TriPlaneGenerator    head framing, PAniC-3D losses (front view)
#   panic_body  TriPlaneGenerator    body framing, NOVA-3D losses (4 ortho views): single-view baseline for (b)
#   nova_v1     TriPlaneGenerator_v1 body framing, direction-aware attention fusion, mask-aware D
#   nova_v0     TriPlaneGenerator_v0 body framing, concatenation fusion (ablation)
# A resumed session passes RESUME_DIR=<folder with <model>.pt transport files> to continue from them.
# Recipe (session 3 on): z = 0 (deterministic reconstruction), L1 x L1_WEIGHT (LPIPS is off: L1 is the only
# appearance term), and a reconstruction-only warm-up: the GAN starts at GAN_START_KIMG.
# EVAL=1: monitor also builds the evaluation sets (_scripts/eval/results_eval.sh STEPS=data, real characters
# from REAL) and collect evaluates there (STEPS=models: tables and comparison figures).
set -uo pipefail
cd "$(dirname "$0")/../.."
PHASE=${PHASE:?PHASE=data_train|monitor|collect}
N=${N:-2000}; SIZE=${SIZE:-256}; BATCH=${BATCH:-8}; CALL_S=${CALL_S:-570}
TRAIN_END_S=${TRAIN_END_S:-1430}       # the trainings stop this long after data_train started
EVAL=${EVAL:-0}; EVAL_N=${EVAL_N:-30}; REAL=${REAL:-.real}
GAN_START_KIMG=${GAN_START_KIMG:-100}; L1_WEIGHT=${L1_WEIGHT:-10}
OUT=${OUT:-/tmp/out}; PY=${PY:-python3}
export LUSTROUS_DATA_ROOT=${LUSTROUS_DATA_ROOT:-/tmp/lustrous} PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
ROOT=$LUSTROUS_DATA_ROOT; RUNS=$ROOT/runs; STATE=$ROOT/results_state; mkdir -p "$OUT" "$RUNS" "$STATE"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
MODELS="panic_head panic_body nova_v1 nova_v0"
D_SMALL='{"channel_base": 2048, "channel_max": 128}'

start_training() {   # model, seconds to run
    local m=$1 left=$2 args=(--runs-dir "$RUNS" --batch "$BATCH" --lpips-weight 0 --d-kwargs "$D_SMALL"
        --ema-rampup 0.05 --tick-kimg 1 --snap-ticks 2 --preview-ticks 2 --kimg 100000 --workers 3 --no-progress
        --run-name "$m" --no-random-z --gan-start-kimg "$GAN_START_KIMG" --l1-weight "$L1_WEIGHT")
    case $m in
        panic_head) args+=(--config _configs/panic_head/base.json --preset panic_head_small --g-kwargs '{}'
                           --renderset synth_head --dataset synth_head) ;;
        panic_body) args+=(--config _configs/nova_body/base.json --preset panic_head_small
                           --g-kwargs '{"framing": "body"}' --generator TriPlaneGenerator
                           --discriminator DualDiscriminator --renderset synth_body --dataset synth_body) ;;
        nova_v1)    args+=(--config _configs/nova_body/base.json --preset nova_body_small --g-kwargs '{}'
                           --renderset synth_body --dataset synth_body) ;;
        nova_v0)    args+=(--config _configs/nova_body/base.json --preset nova_body_small --g-kwargs '{}'
                           --generator TriPlaneGenerator_v0 --renderset synth_body --dataset synth_body) ;;
    esac
    [ -n "${RESUME_DIR:-}" ] && [ -f "$RESUME_DIR/$m.pt" ] && args+=(--resume "$RESUME_DIR/$m.pt")
    setsid nohup timeout -s TERM "$left" $PY -m _train.eg3dc.train "${args[@]}" > "$STATE/$m.log" 2>&1 < /dev/null &
    echo $! > "$STATE/$m.pid"
}

latest_snapshot() { ls -1 "$RUNS/$1"/0*/network-snapshot-*.pt 2>/dev/null | tail -1; }

export_all() {   # $1: suffix of the exported files
    for m in $MODELS; do
        s=$(latest_snapshot "$m"); [ -n "$s" ] || { log "$m: no snapshot yet"; continue; }
        $PY -m training.checkpoint export-bf16 "$s" "$OUT/$m$1.pt" --keep G_ema,D | sed "s|^|$m: $(basename "$s") -> |"
    done
}

status() {
    nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total --format=csv,noheader
    for m in $MODELS; do
        d=$(ls -1d "$RUNS/$m"/0* 2>/dev/null | tail -1)
        echo "$m: $( [ -f "$d/metrics.jsonl" ] && tail -1 "$d/metrics.jsonl" | cut -c1-400 ) | $(grep -v '^\s*$' "$STATE/$m.log" | tail -1 | cut -c1-200)"
    done
}

pack() {
    # the last two previews of each run (the file limit: four checkpoints leave ~8 MB for this archive)
    tar czf "$OUT/results_logs.tar.gz" -C "$ROOT" results_state $(cd "$ROOT" && ls -d runs/*/0*/metrics.jsonl \
        runs/*/0*/config.json eval_out 2>/dev/null; for d in "$ROOT"/runs/*/0*; do
        ls -1 "$d"/preview-*.png 2>/dev/null | tail -2 | sed "s|^$ROOT/||"; done) 2>/dev/null
    ls -la "$OUT"
}

case $PHASE in
data_train)
    echo "$T0" > "$STATE/t0"
    P=$(nproc); W=$(( P > 2 ? P - 2 : 1 ))
    for i in $(seq 0 $((P - 1))); do
        $PY -m _scripts.data.synth --n $(( (N + P - 1) / P )) --start $(( i * ((N + P - 1) / P) )) --seed 0 \
            >/dev/null 2>"$STATE/synth_$i.err" &
    done; wait
    log "synth: $(find "$ROOT"/raw/synth -name "*.glb" | wc -l) characters"
    for F in head body; do
        $PY -m _scripts.data.render --source synth --renderset "synth_$F" --framing "$F" --size "$SIZE" \
            --workers "$W" 2>&1 | tr '\r' '\n' | tail -2
        [ -d "$ROOT/renders/synth_$F" ] || { log "render $F failed"; exit 1; }
        log "render $F done"
    done
    for F in head body; do
        $PY -m _scripts.train.data_clean --dataset "synth_$F" --phase all --quiet --workers "$P" | tail -4 &
    done; wait
    for F in head body; do
        $PY -m _scripts.train.generate_ortho_mask --dataset "synth_$F" --split all --quiet --workers $(( P > 3 ? P / 2 : 1 )) &
        $PY -m _scripts.train.generate_rgb_mask --dataset "synth_$F" --split all --quiet --workers $(( P > 3 ? P / 2 : 1 )) &
        wait
    done
    for F in head body; do [ -s "$ROOT/subsets/synth_${F}_train.csv" ] || { log "clean $F failed"; exit 1; }; done
    log "clean + masks done: $(for F in head body; do echo -n "$F $(wc -l < "$ROOT/subsets/synth_${F}_train.csv") train / $(wc -l < "$ROOT/subsets/synth_${F}_test.csv") test; "; done)"
    left=$(( T0 + TRAIN_END_S - $(date +%s) ))
    for m in $MODELS; do start_training "$m" "$left"; done
    log "started $MODELS for $left s"
    log "data: $(du -sh "$ROOT/renders" | cut -f1) of renders" | tee "$OUT/data_timing.txt"
    while [ $(( $(date +%s) - T0 )) -lt "$CALL_S" ]; do sleep 30; status; done
    ;;
monitor)
    if [ "$EVAL" = 1 ]; then   # the evaluation sets, on the CPU cores the trainings leave
        ( CKPTS=$OUT STEPS=data EVAL_N=$EVAL_N REAL=$REAL WORKERS=4 PY=$PY EVAL_ROOT=$ROOT/results_eval \
          RESULTS=$ROOT/eval_out bash _scripts/eval/results_eval.sh > "$STATE/eval_data.log" 2>&1
          echo "exit $?" >> "$STATE/eval_data.log" ) &
    fi
    while [ $(( $(date +%s) - T0 )) -lt $(( CALL_S - 40 )) ]; do sleep 60; status; done
    wait
    [ "$EVAL" = 1 ] && { log "eval data:"; grep -E "cached|test ids|exit" "$STATE/eval_data.log"; }
    export_all _mid
    ;;
collect)
    for m in $MODELS; do
        while kill -0 "$(cat "$STATE/$m.pid")" 2>/dev/null; do sleep 5; done
        log "$m finished: $(grep -v '^\s*$' "$STATE/$m.log" | tail -2 | tr '\n' ' ' | cut -c1-300)"
    done
    status
    export_all ""
    mkdir -p "$ROOT/eval_out"
    pack      # logs, metrics and previews first: the evaluation below may run out of the call's time
    if [ "$EVAL" = 1 ]; then
        CKPTS=$OUT STEPS=models EVAL_N=$EVAL_N REAL=$REAL DEVICE=cuda JOBS=8 PY=$PY EVAL_ROOT=$ROOT/results_eval \
            RESULTS=$ROOT/eval_out bash _scripts/eval/results_eval.sh > "$ROOT/eval_out/results_eval.log" 2>&1
        log "eval: exit $?"; cat "$ROOT/eval_out/table.md"      # figures: eval_out/results_<set>.png
    fi
    pack
    ;;
esac
