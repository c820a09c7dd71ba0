#!/usr/bin/env bash
# The trainer's step at its recipes (docs/models.md, Benchmark), one GPU job of at most BENCH_TOTAL_S seconds (570).
# Writes $DEST/bench_models.json ({run name: [one entry per configuration], "_runs": [...]}) and the printed
# log $DEST/bench_models.log.  Runs in order of importance, each under its own timeout (at most its cap and
# the time left of BENCH_TOTAL_S); a run that times out keeps the configurations it finished (the benchmark
# rewrites its JSON after each one); runs that no longer fit are listed as skipped.
#   PY=python3 PYTHONPATH=. DEST=/tmp/out _scripts/gpu/bench_models.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
DEST=${DEST:-/tmp/out}; PY=${PY:-python3}; TOTAL=${BENCH_TOTAL_S:-570}
mkdir -p "$DEST"
W=$(mktemp -d /tmp/bench_models.XXXXXX); : > "$W/runs.tsv"
LOG="$DEST/bench_models.log"; : > "$LOG"
export PYTHONUNBUFFERED=1
END=$((SECONDS + TOTAL))

# Inductor's compiled kernels can outlive the machine: INDUCTOR_IN=DIR restores DIR/inductor.tgz.part*
# (an earlier job's $DEST), INDUCTOR_SAVE=1 writes the cache back as $DEST/inductor.tgz.partNN
# (INDUCTOR_PIECE_MB pieces, default 15); every fresh machine otherwise compiles from cold (minutes per configuration).  Only the
# Triton binaries and inductor's autotuning choices are kept (about 3 MB for the EG3D step): the full cache
# is larger (FX graph entries of up to 50 MB each), more than is worth keeping
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor_cache}
mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
if [ -n "${INDUCTOR_IN:-}" ] && compgen -G "$INDUCTOR_IN/inductor.tgz.part*" > /dev/null; then
    cat "$INDUCTOR_IN"/inductor.tgz.part* | tar -xzf - -C "$TORCHINDUCTOR_CACHE_DIR" \
        && echo "inductor cache restored from $INDUCTOR_IN ($(du -sh "$TORCHINDUCTOR_CACHE_DIR" | cut -f1))" | tee -a "$LOG"
fi
save_inductor() {
    [ -n "${INDUCTOR_SAVE:-}" ] || return 0
    rm -f "$DEST"/inductor.tgz.part*
    (cd "$TORCHINDUCTOR_CACHE_DIR" && { find . -path ./triton -prune -o -name '*.best_config' -print
        find ./triton -type f \( -name '*.cubin' -o -name '*.json' \) 2>/dev/null; } \
        | tar -czf - -T -) | split -b "${INDUCTOR_PIECE_MB:-15}m" -d - "$DEST/inductor.tgz.part"
    echo "inductor cache saved: $(ls "$DEST"/inductor.tgz.part* | wc -l) pieces, $(du -ch "$DEST"/inductor.tgz.part* | tail -1 | cut -f1)" | tee -a "$LOG"
}

{ date -u; nvidia-smi -L 2>/dev/null; $PY -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee -a "$LOG"

# run NAME CAP_S ARGS...: one benchmark invocation, its JSON in $W/NAME.json, its status in $W/runs.tsv
run() {
    local name=$1 cap=$2; shift 2
    local left=$((END - SECONDS - 10))
    if [ "$left" -lt 30 ]; then
        echo "=== $name: skipped (${left}s left)" | tee -a "$LOG"
        printf '%s\tskipped\t0\t0\t%s\n' "$name" "$*" >> "$W/runs.tsv"
        return
    fi
    local t=$(( cap < left ? cap : left )) t0=$SECONDS
    echo "=== $name (timeout ${t}s): $*" | tee -a "$LOG"
    timeout -k 5 "$t" $PY -m _scripts.bench.models "$@" --json "$W/$name.json" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: rc $rc after $((SECONDS - t0))s" | tee -a "$LOG"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$t" "$*" >> "$W/runs.tsv"
}

# Each run is one benchmark invocation with its cap (seconds); the list takes longer than one job's BENCH_TOTAL_S, so split it
# with RUNS (comma-separated names), e.g.  RUNS=a_eager,a_compiled  then  RUNS=b_eager,b_compiled,...
want() { [ -z "${RUNS:-}" ] || [[ ",$RUNS," == *",$1,"* ]]; }
R() { want "$1" && run "$@"; return 0; }
T="--device cuda --train-only --steps 16 --mesh-res 0"
# (a) the EG3D-equivalent GAN step (recipe eg3d_ffhq512: EG3D's ffhq configuration at batch 16, NR 64): eager
#     with R1 in fp32 and in bf16; compiled in the trainer's default mode and with CUDA graphs
A="--config eg3d_ffhq512 $T"
R a_eager 400 $A --compile off --r1-bf16 both --phase-times
R a_compiled 540 $A --compile on --r1-bf16 both
R a_compiled_cg 540 $A --compile on --compile-mode reduce-overhead --phase-times
R a_compiled_cg_r1bf16 540 $A --compile on --compile-mode reduce-overhead --r1-bf16 on
R a_nr128_compiled_cg 540 $A --nr 128 --compile on --compile-mode reduce-overhead
# (b) the release recipe (ray reconstruction, no GAN, fp32), as released (batch 16)
B="--config release/nova_v1 $T"
R b_eager 300 $B --compile off --phase-times
R b_compiled 540 $B --compile on
R b_compiled_cg 540 $B --compile on --compile-mode reduce-overhead
# (c) the published recipes: NOVA-3D body at its per-GPU batch (16 over 4 GPUs: 4), PAniC-3D head at batch 8;
#     bf16 (the recipes' auto on CUDA), R1 in fp32 and bf16
C_BODY="--config nova_body --batch 4 $T"
C_HEAD="--config panic_head $T"
R c_body_eager 400 $C_BODY --compile off --r1-bf16 both
R c_body_compiled 540 $C_BODY --compile on --r1-bf16 both
R c_head_eager 400 $C_HEAD --compile off --r1-bf16 both
R c_head_compiled 540 $C_HEAD --compile on --r1-bf16 both
# the networks alone: batch-1 inference eager + the whole forward compiled with CUDA graphs, a 256^3 mesh
R infer_b1 240 --config eg3d_ffhq512 --device cuda --batch 1 --networks-only --compile off --bf16 on --steps 10 \
    --warmup 3 --compile-infer reduce-overhead --mesh-res 256 --mesh-level median

$PY - "$DEST/bench_models.json" "$W" <<'PY' 2>&1 | tee -a "$LOG"
import json, os, sys
out_path, w = sys.argv[1], sys.argv[2]
out, runs = {}, []
for line in open(os.path.join(w, "runs.tsv")):
    name, rc, secs, cap, args = line.rstrip("\n").split("\t")
    runs.append({"name": name, "rc": rc, "seconds": int(secs), "timeout_s": int(cap), "args": args})
    p = os.path.join(w, name + ".json")
    if os.path.exists(p):
        out[name] = json.load(open(p))
out["_runs"] = runs
json.dump(out, open(out_path, "w"), indent=1)

def g(d, *ks):
    for k in ks:
        d = d.get(k) if isinstance(d, dict) else None
    return d

def f(x, spec):
    return "-" if x is None else format(x, spec)

print(f"\nsummary ({out_path}); steps back to back; FLOPs are matmul/conv only, MFU vs dense bf16 peak")
print(f"{'run':24s} {'config':16s} {'nr':>4s} {'bf16':>5s} {'R1':>5s} {'comp':>5s} {'img/s':>7s} {'step ms':>8s}"
      f" {'MFU':>6s} {'GF/img':>7s} {'peak GiB':>8s} {'1st s':>6s} {'comp s':>6s} {'b1 ms':>7s}  error")
for name, res in out.items():
    if name == "_runs":
        continue
    for r in res:
        t = r.get("train_step") or {}
        mfu = g(r, "mfu", "train")
        errs = [e for e in (r.get("error"), t.get("error"), g(r, "G_inference_batch1_compiled", "error")) if e]
        prec = r.get("precision") or {}
        print(f"{name:24s} {str(r.get('config')):16s} {f(r.get('nr'), '4d')} {str(r.get('bf16')):>5s} "
              f"{prec.get('Dreg', '-')[:5]:>5s} {(r.get('compile_mode') or 'no')[:5]:>5s} "
              f"{f(t.get('images_per_s'), '7.1f')} {f(t.get('ms_mean'), '8.1f')} "
              f"{'-' if mfu is None else format(100 * mfu, '5.1f') + '%'} "
              f"{f(r.get('flops_per_train_image') and r['flops_per_train_image'] / 1e9, '7.1f')} "
              f"{f(t.get('peak_gib'), '8.2f')} {f(t.get('first_step_s'), '6.0f')} {f(t.get('compile_s'), '6.0f')} "
              f"{f(g(r, 'G_inference_batch1', 'ms'), '7.2f')}  {'; '.join(e[:80] for e in errs)}")
        if prec:
            print(f"  {r.get('step', '')}")
        if "mesh" in r:
            print(f"  mesh: {json.dumps(r['mesh'])}")
        if "G_inference_batch1_compiled" in r:
            print(f"  batch-1 compiled: {json.dumps(r['G_inference_batch1_compiled'])}")
for r in runs:
    print(f"run {r['name']}: rc {r['rc']} in {r['seconds']} s (timeout {r['timeout_s']} s)")
PY
save_inductor
rm -rf "$W"
