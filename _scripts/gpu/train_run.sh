#!/usr/bin/env bash
# One scripted GPU session: synthesise + render a dataset, clean it, train, keep the figures.
#   N=256 FRAMING=body TRAIN_S=300 PRESET=nova_body OUT=/tmp/out _scripts/gpu/train_run.sh [extra train flags]
# On the lent device machine the command line first unpacks the carried wheels/EGL debs (see docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-256}; FRAMING=${FRAMING:-body}; SIZE=${SIZE:-256}; TRAIN_S=${TRAIN_S:-300}
PRESET=${PRESET:-nova_body}; CONFIG=${CONFIG:-_configs/nova_body/base.json}; RUN=${RUN:-gpu_${PRESET}}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export LUSTROUS_DATA_ROOT=${LUSTROUS_DATA_ROOT:-/tmp/lustrous} PYTHONUNBUFFERED=1
PY=${PY:-python3}
RS=synth_${FRAMING}
t0=$(date +%s)
P=$(nproc); J=$(( P < 8 ? P : 8 ))
for i in $(seq 0 $((J - 1))); do
    $PY -m _scripts.data.synth --n $(( (N + J - 1) / J )) --start $(( i * ((N + J - 1) / J) )) --seed 0 >/dev/null 2>&1 &
done; wait
t1=$(date +%s)
$PY -m _scripts.data.render --source synth --renderset "$RS" --framing "$FRAMING" --size "$SIZE" \
    --workers $(( P < 12 ? P : 12 )) 2>&1 | tail -3
t2=$(date +%s)
$PY -m _scripts.train.data_clean --dataset "$RS" --phase all --quiet | tail -8
$PY -m _scripts.train.generate_ortho_mask --dataset "$RS" --split all --quiet --workers 8
$PY -m _scripts.train.generate_rgb_mask --dataset "$RS" --split all --quiet --workers 8
t3=$(date +%s)
echo "data: synth $((t1-t0)) s, render $((t2-t1)) s, clean+masks $((t3-t2)) s for $N characters" | tee "$OUT/data_timing.txt"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 > "$OUT/nvsmi.csv" 2>/dev/null &
SMI=$!
set +e
timeout -s TERM "$TRAIN_S" $PY -m _train.eg3dc.train --config "$CONFIG" --preset "$PRESET" \
    --renderset "$RS" --dataset "$RS" --run-name "$RUN" --g-kwargs '{}' --lpips-weight 0 \
    --workers 6 --progress "$@" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -40
set -e
kill $SMI 2>/dev/null || true
RUNDIR=$(ls -d _train/eg3dc/runs/"$RUN"/0* | tail -1)
cp "$RUNDIR"/config.json "$RUNDIR"/metrics.jsonl "$OUT"/
ls "$RUNDIR"/preview-*.png >/dev/null 2>&1 && cp "$(ls "$RUNDIR"/preview-*.png | tail -1)" "$OUT"/preview_last.png
ls "$RUNDIR"/preview-*.png >/dev/null 2>&1 && cp "$(ls "$RUNDIR"/preview-*.png | head -1)" "$OUT"/preview_first.png
ls -la "$RUNDIR"
