#!/usr/bin/env bash
# Evaluate the GPU-trained checkpoints (docs/results.md) on any machine, CPU included:
#   CKPTS=<folder with panic_head.pt panic_body.pt nova_v1.pt nova_v0.pt> _scripts/eval/results_eval.sh
#   CKPTS=release _scripts/eval/results_eval.sh          # the released models (_configs/release.toml)
# 1. rebuilds the first EVAL_N characters of the GPU dataset's held-out test split (same seed, same id hash
#    split: the synthetic characters are byte-deterministic) and renders them in head and body framing;
# 2. renders the real characters of ../shared/data/real_models in both framings;
# 3. _scripts.eval.generate + _scripts.eval.measure for each model on its framing's sets.
# Tables land in $RESULTS (default temp/results_eval/): measure_<model>_<set>.{txt,json}, the all-white floor
# blank_<set>.json and table.md (the table of docs/results.md).  EVAL_N_BODY (default EVAL_N) keeps only the
# first N body characters (fewer body characters save CPU time).  FRAMINGS (default "head body") builds and
# measures only those framings' sets (FRAMINGS=body for the body models alone).
# STEPS=data|models|all (default all): data = steps 1-3 (test renders, floor, GT meshes), models = steps 4-6
# (generate + measure, table.md, compare_<model>_panic_body_<set>.txt, the figures results_<set>.png).
# JOBS=N runs N generate+measure pairs at a time (a GPU machine: 8); WORKERS renders with that many processes.
# SPLIT=train (or val) evaluates the first EVAL_N training (validation) characters instead (give it its own
# EVAL_ROOT and RESULTS: the sets keep the names synth_<framing>_test); choose settings on val, report on test.
set -euo pipefail
cd "$(dirname "$0")/../.."
CKPTS=${CKPTS:?CKPTS=<folder with the transport checkpoints>}
EVAL_N=${EVAL_N:-30}; EVAL_N_BODY=${EVAL_N_BODY:-$EVAL_N}; N_TOTAL=${N_TOTAL:-2000}; MESH_RES=${MESH_RES:-128}
HEAD_SIZE=${HEAD_SIZE:-${SIZE:-256}}; BODY_SIZE=${BODY_SIZE:-${SIZE:-256}}   # render sizes (as the training data)
export MODELS=${MODELS:-panic_head panic_body nova_v1 nova_v0}
REAL=${REAL:-../shared/data/real_models}; DEVICE=${DEVICE:-auto}
NRR=${NRR:-}        # neural rendering resolution of the evaluation renders (default: each checkpoint's own)
FRAMINGS=${FRAMINGS:-head body}   # the framings whose test sets are built and measured (body: the body models only)
has_framing() { [[ " $FRAMINGS " == *" $1 "* ]]; }
export SETS=""; for F in $FRAMINGS; do SETS="$SETS synth_$F real_$F"; done
STEPS=${STEPS:-all}; JOBS=${JOBS:-1}; WORKERS=${WORKERS:-2}; SPLIT=${SPLIT:-test}
ROOT=${EVAL_ROOT:-$PWD/_data/results_eval}; RESULTS=${RESULTS:-$PWD/temp/results_eval}
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$ROOT" "$RESULTS"
DR=(--data-root "$ROOT")

if [ "$STEPS" != models ]; then
# 1. the held-out synthetic characters: ids with a test hash among the N_TOTAL of the GPU run (SPLIT=train:
#    training characters instead, to compare what a model fits with what it generalises to; SPLIT=val: the
#    validation characters, to choose evaluation settings such as the mesh level)
$PY - "$ROOT" "$N_TOTAL" "$EVAL_N" "$SPLIT" <<'PY'
import sys
from training.data import clean
from training.data import catalog
from training.data import synth
root, n, k, split = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ids = [synth.char_id(0, i) for i in range(n)]
chosen = clean.split_ids(ids, (0.8, 0.1, 0.1), ensure=False)[split]
idx = sorted(int(c.rsplit("_", 1)[1]) for c in chosen)[:k]
for i in idx:
    synth.write_dataset(root, 1, 0, start=i, progress=False)
print(f"{len(chosen)} {split} ids of {n}; wrote the first {len(idx)}")
PY
size_of() { [ "$1" = head ] && echo "$HEAD_SIZE" || echo "$BODY_SIZE"; }
for F in $FRAMINGS; do
    $PY -m _scripts.data.render --source synth --renderset "synth_$F" --framing "$F" --size "$(size_of $F)" --grid60 \
        --workers "$WORKERS" "${DR[@]}"
    # every rendered character is a test character here (the same drop rules as the training data)
    $PY -m _scripts.train.data_clean --dataset "synth_$F" --ratios 0,0,1 --quiet "${DR[@]}" | tail -2
done
T=$ROOT/subsets/synth_body_test.csv
if has_framing body; then head -n "$EVAL_N_BODY" "$T" > "$T.tmp" && mv "$T.tmp" "$T"; fi

# 2. the real characters, both framings
for F in $FRAMINGS; do
    $PY -m _scripts.data.render --src "$REAL/godette/godette.vrm" --renderset "real_$F" --framing "$F" \
        --size "$(size_of $F)" --grid60 "${DR[@]}"
    $PY -m _scripts.data.render --src "$REAL/rai_girl/model.obj" --texture "$REAL/rai_girl/diffuse_map.png" \
        --renderset "real_$F" --framing "$F" --size "$(size_of $F)" --grid60 "${DR[@]}"
    # both characters are measured even where data_clean would drop one as cut off (godette's hair buns
    # leave the head box): the evaluation reports them, flagged in docs/results.md
    $PY -c "from training import paths; print(paths.key_of('godette')); print(paths.key_of('model'))" \
        > "$ROOT/subsets/real_${F}_test.csv"
done

# 3. the floor: an all-white prediction
for set in $SETS; do
    $PY -m _scripts.eval.blank_baseline --dataset "$set" --json "$RESULTS/blank_$set.json" "${DR[@]}"
done

# 3b. the ground-truth meshes (cached under $ROOT/temp/eval/_gt: every model's measure then reuses them)
for set in $SETS; do
    $PY - "$ROOT" "$set" <<'PY' &
import sys
from training import paths
from training.data import catalog
from training.eval.gt_mesh import ground_truth_mesh
root, rs = sys.argv[1], sys.argv[2]
ids = paths.read_subset(root, rs, "test")
rs_meta = catalog.load_renderset_meta(root, rs)
for cid in ids:
    ground_truth_mesh(root, rs, cid, catalog.load_char_meta(root, rs, cid), rs_meta)
print(f"{rs}: {len(ids)} ground-truth meshes cached")
PY
done
wait
fi
[ "$STEPS" = data ] && exit 0

# 4. generate + measure, JOBS pairs at a time
ckpt_of() {   # model: its checkpoint file ("" when there is none)
    if [ "$CKPTS" = release ]; then
        $PY -c "from training.infer.release import released_checkpoint as r; print(r('$1')[1])" 2>/dev/null
    elif [ -f "$CKPTS/$1.pt" ]; then
        echo "$CKPTS/$1.pt"
    fi
}
evaluate() {   # model, set
    local m=$1 set=$2 name="res_$1_$2"
    $PY -m _scripts.eval.generate --ckpt "$(ckpt_of "$m")" --name "$name" --dataset "$set" --split test \
        --batch 4 --samples 48 48 --mesh-resolution "$MESH_RES" --device "$DEVICE" --no-progress "${DR[@]}" \
        ${NRR:+--neural-rendering-resolution "$NRR"} \
        > "$RESULTS/generate_${m}_$set.txt" 2>&1 || { echo "== $m on $set: generate failed"; tail -3 "$RESULTS/generate_${m}_$set.txt"; return; }
    $PY -m _scripts.eval.measure --inferquery "$name" --dataset "$set" --split test --samples 10000 \
        --fid-min 1000000 --device "$DEVICE" --no-progress "${DR[@]}" > "$RESULTS/measure_${m}_$set.txt" 2>&1
    cp "$ROOT/temp/eval/$name/$set/measure.json" "$RESULTS/measure_${m}_$set.json"
    echo "== $m on $set"; head -20 "$RESULTS/measure_${m}_$set.txt"
}
for m in $MODELS; do
    [ -n "$(ckpt_of "$m")" ] || { echo "no checkpoint of $m in $CKPTS: skipped"; continue; }
    F=body; [ "$m" = panic_head ] && F=head
    has_framing "$F" || { echo "$m: $F framing not in FRAMINGS: skipped"; continue; }
    for set in "synth_$F" "real_$F"; do
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 2; done
        evaluate "$m" "$set" &
    done
done
wait

# 5. one table (docs/results.md)
$PY - "$RESULTS" > "$RESULTS/table.md" <<'PY'
import json, math, os, sys
R = sys.argv[1]
def f(x, nd=2):
    if x is None:
        return "n/a"
    if isinstance(x, str) or math.isinf(x):
        return "no surface"
    return f"{x:.{nd}f}"
print("| model | test set | characters | front PSNR / SSIM | back PSNR / SSIM | left/right PSNR / SSIM | 360 PSNR / SSIM "
      "| CD (cm) | F1@5 / F1@10 (%) | devcorr front / back / side |")
print("|---|---|---|---|---|---|---|---|---|---|")
for s in os.environ["SETS"].split():
    b = json.load(open(f"{R}/blank_{s}.json"))
    print(f"| all-white image (floor) | {s} | {b['characters']} | {b['front']['psnr']:.2f} / {b['front']['ssim']:.1f} "
          f"| {b['back']['psnr']:.2f} / {b['back']['ssim']:.1f} | | | | | |")
    for m in os.environ.get("MODELS", "panic_head panic_body nova_v1 nova_v0").split():
        p = f"{R}/measure_{m}_{s}.json"
        if not os.path.exists(p):
            continue
        d = json.load(open(p))
        t = {(r["subset"], r["metric"]): r["value"] for r in d["table"]}
        print(f"| {m} | {s} | {d['n_characters']} | {f(t['front', 'psnr'])} / {f(t['front', 'ssim'], 1)} "
              f"| {f(t['back', 'psnr'])} / {f(t['back', 'ssim'], 1)} | {f(t['side', 'psnr'])} / {f(t['side', 'ssim'], 1)} "
              f"| {f(t['360', 'psnr'])} / {f(t['360', 'ssim'], 1)} "
              f"| {f(t['geom', 'cd'])} | {f(t['geom', 'f1@5'], 1)} / {f(t['geom', 'f1@10'], 1)} "
              f"| {f(t.get(('front', 'devcorr')))} / {f(t.get(('back', 'devcorr')))} / {f(t.get(('side', 'devcorr')))} |")
PY
cat "$RESULTS/table.md"

# 5b. NOVA-3D's comparison, paired per character: the two-view models' lead over the one-view body model
for set in $SETS; do
    for m in nova_v1 nova_v0; do
        A=$RESULTS/measure_${m}_$set.json B=$RESULTS/measure_panic_body_$set.json
        [ -f "$A" ] && [ -f "$B" ] || continue
        $PY -m _scripts.eval.compare "$A" "$B" > "$RESULTS/compare_${m}_panic_body_$set.txt" \
            && { echo "== $m against panic_body on $set"; sed -n 3,7p "$RESULTS/compare_${m}_panic_body_$set.txt"; }
    done
done

# 6. comparison figures (3 characters per set): results_<set>.png
for set in $SETS; do
    case $set in
        *head) q=(res_panic_head_$set); l=(PAniC-3D) ;;
        *) q=(); l=()
           for m in nova_v1 nova_v0 panic_body; do
               [ -f "$RESULTS/measure_${m}_$set.json" ] && { q+=("res_${m}_$set"); l+=("$m"); }
           done ;;
    esac
    [ ${#q[@]} -gt 0 ] || continue
    $PY -m _scripts.eval.results_figure --renderset "$set" --inferquery "${q[@]}" --label "${l[@]}" --chars 3 \
        --out "$RESULTS/results_$set.png" "${DR[@]}" 2>&1 | tail -1 || true
done
