#!/usr/bin/env bash
# Model benchmarks at the REFERENCE configurations (issue 3), in GPU calls of at most BENCH_TOTAL_S (570 s) each.
# Writes $OUT/bench_models.json ({run name: [one entry per configuration], "_runs": [...]}) and the printed
# log $OUT/bench_models.log.  Runs in order of importance, each under its own timeout (at most its cap and
# the time left of BENCH_TOTAL_S); a run that times out keeps the configurations it finished (the benchmark
# rewrites its JSON after each one); runs that no longer fit are listed as skipped.
#   PY=python3 PYTHONPATH=. OUT=/tmp/out _scripts/gpu/bench_models.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; PY=${PY:-python3}; TOTAL=${BENCH_TOTAL_S:-570}
mkdir -p "$OUT"
W=$(mktemp -d /tmp/bench_models.XXXXXX); : > "$W/runs.tsv"
LOG="$OUT/bench_models.log"; : > "$LOG"
export PYTHONUNBUFFERED=1
END=$((SECONDS + TOTAL))
EG3D="--preset eg3d_ffhq512 --device cuda"
COMMON="--steps 3 --warmup 1 --mesh-res 0"

# Inductor's compiled kernels can outlive the machine: INDUCTOR_IN=DIR restores DIR/inductor.tgz.part*
# (carried from an earlier call's $OUT), INDUCTOR_SAVE=1 writes the cache back as $OUT/inductor.tgz.partNN
# (15 MiB pieces); every fresh machine otherwise compiles from cold (3-5 min per configuration).  Only the
# Triton binaries and inductor's autotuning choices are kept (about 3 MB for the EG3D step): the full cache
# is 400 MB (FX graph entries of up to 50 MB each), more than a call can bring back or carry
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor_cache}
mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
if [ -n "${INDUCTOR_IN:-}" ] && compgen -G "$INDUCTOR_IN/inductor.tgz.part*" > /dev/null; then
    cat "$INDUCTOR_IN"/inductor.tgz.part* | tar -xzf - -C "$TORCHINDUCTOR_CACHE_DIR" \
        && echo "inductor cache restored from $INDUCTOR_IN ($(du -sh "$TORCHINDUCTOR_CACHE_DIR" | cut -f1))" | tee -a "$LOG"
fi
save_inductor() {
    [ -n "${INDUCTOR_SAVE:-}" ] || return 0
    rm -f "$OUT"/inductor.tgz.part*
    (cd "$TORCHINDUCTOR_CACHE_DIR" && { find . -path ./triton -prune -o -name '*.best_config' -print
        find ./triton -type f \( -name '*.cubin' -o -name '*.json' \) 2>/dev/null; } \
        | tar -czf - -T -) | split -b 15m -d - "$OUT/inductor.tgz.part"
    echo "inductor cache saved: $(ls "$OUT"/inductor.tgz.part* | wc -l) pieces, $(du -ch "$OUT"/inductor.tgz.part* | tail -1 | cut -f1)" | tee -a "$LOG"
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

# Per-run caps are what each run took on the H100 (2026-11-24) plus a margin: the whole list takes about
# 25 minutes, so split it over calls with RUNS (comma-separated names), e.g.
#   RUNS=eg3d_nr64_bf16_compiled,eg3d_infer_b1,eg3d_nr64_bf16  then  RUNS=eg3d_nr128_bf16,nova_body,panic_head,...
want() { [ -z "${RUNS:-}" ] || [[ ",$RUNS," == *",$1,"* ]]; }
R() { want "$1" && run "$@"; return 0; }
# 0. the headline training throughput (issue: >= 100 img/s at NR 64, >= 50 at NR 128): EG3D FFHQ-512 sizes,
#    batch 16, bf16, everything compiled that needs only first derivatives (G's parts, D for G main / D main)
#    with the compiled arithmetic, R1 on the eager D in bf16; only the training graphs are compiled; since
#    session 5 with CUDA graphs (reduce-overhead: 5-6 min each from a cold machine, a whole call each; two
#    fit one call side by side with _scripts/gpu/bench_side_by_side.sh); since session 6 the benchmark's
#    defaults are inductor's forced channels-last layout and channels-last R1 images, as the trainer's
CT="$EG3D --batch 16 --bf16 on --compile --compile-d --r1-bf16 --train-step --train-only --steps 16 --warmup 2 --mesh-res 0"
R eg3d_nr64_train 540 $CT --nr 64 --compile-mode reduce-overhead --phase-times
R eg3d_nr128_train 540 $CT --nr 128 --compile-mode reduce-overhead --phase-times
# session 4's headline (no CUDA graphs), and session 5's D main as two D calls (default: one joined call)
R eg3d_nr64_train_default 400 $CT --nr 64
R eg3d_nr64_train_nopair 400 $CT --nr 64 --d-pair off
# 1. (session 2's headline) EG3D FFHQ-512 sizes, batch 16, NR 64, bf16, G compiled
R eg3d_nr64_bf16_compiled 330 $EG3D --batch 16 --nr 64 --bf16 on --compile --train-step --steps 3 --warmup 2 --mesh-res 0
# 2. batch-1 inference eager + whole forward compiled with CUDA graphs (issue: <= 8 ms)
R eg3d_infer_b1 240 $EG3D --batch 1 --nr 64 --bf16 on --steps 10 --warmup 3 --compile-infer reduce-overhead --mesh-res 0
# 3. eager bf16 and fp32/tf32 (NR 128 fp32 runs out of memory at batch 16), mesh 256^3 at batch 1
R eg3d_nr64_bf16 150 $EG3D --batch 16 --nr 64 --bf16 on --train-step $COMMON
R eg3d_nr64_fp32 150 $EG3D --batch 16 --nr 64 --bf16 off --train-step $COMMON
R eg3d_nr128_bf16 180 $EG3D --batch 16 --nr 128 --bf16 on --train-step $COMMON
R eg3d_mesh 120 $EG3D --batch 1 --nr 64 --bf16 on --steps 3 --warmup 1 --mesh-res 256 --mesh-level median
# 4. NOVA-3D body and PAniC-3D head presets
R nova_body 240 --preset nova_body --device cuda --batch 4 --bf16 both --train-step $COMMON
R panic_head 180 --preset panic_head --device cuda --batch 8 --bf16 both --train-step $COMMON
# 5. D compiled too for its first-order phases (G main, D main), R1 in bf16 or fp32.  Session 3 gave these
#    330 s and 212 s on the H100 and both timed out without a result (compiling D on top of G): cap 540 s
R eg3d_nr64_bf16_compiled_gd 540 $EG3D --batch 16 --nr 64 --bf16 on --compile --compile-d --r1-bf16 --train-step --steps 3 --warmup 2 --mesh-res 0
R eg3d_nr64_bf16_compiled_gd_r1fp32 540 $EG3D --batch 16 --nr 64 --bf16 on --compile --compile-d --train-step --steps 3 --warmup 2 --mesh-res 0
# 6. the rest of the compile grid
R eg3d_nr128_bf16_compiled 360 $EG3D --batch 16 --nr 128 --bf16 on --compile --train-step --steps 3 --warmup 2 --mesh-res 0
# 7. where the eager step's time goes, and the variants that do the same arithmetic differently (same
#    numbers, tested): FIR filters not folded into the resampling convs (fewer FLOPs, more filter passes),
#    channels-last activations, the gather triplane lookup; then all three together, with a full step
for nr in 64 128; do
    P="$EG3D --batch 16 --nr $nr --bf16 on --parts $COMMON"
    R eg3d_nr${nr}_parts 150 $P --train-step --profile
    R eg3d_nr${nr}_parts_unfolded 90 $P --fold off
    R eg3d_nr${nr}_parts_cl 90 $P --channels-last
    R eg3d_nr${nr}_parts_gather 90 $P --lookup gather
    R eg3d_nr${nr}_parts_all 150 $P --fold off --channels-last --lookup gather --train-step
done
# 9. session 4: fold/lookup now default to the compiled optimum with --compile (auto); channels-last on top
R eg3d_nr64_c_cl 400 $CT --nr 64 --channels-last --profile
R eg3d_nr128_c 400 $CT --nr 128
R eg3d_nr128_c_cl 400 $CT --nr 128 --channels-last

# 10. R1 with the twice-differentiable conv (cuDNN kernels for the double backward) and folded filters in the
#     eager D; then with CUDA graphs (reduce-overhead) for the compiled parts: session 5 ran them as
#     eg3d_nr64_c_cudagraphs and eg3d_nr128_cg, now the headline runs of section 0; profiled, channels-last
R eg3d_nr64_c_r1 400 $CT --nr 64 --profile
R eg3d_nr128_c_r1 400 $CT --nr 128
R eg3d_nr64_cg_profile 540 $CT --nr 64 --compile-mode reduce-overhead --profile
R eg3d_nr64_cg_cl 540 $CT --nr 64 --compile-mode reduce-overhead --channels-last --profile

# 12. session 6 (ran side by side, bench_side_by_side.sh): inductor's own layout heuristic (it kept the
#     super-resolution NCHW), R1's images NCHW, channels-last activations in the super-resolution
R eg3d_nr64_layout_auto 540 $CT --nr 64 --compile-mode reduce-overhead --phase-times --layout-opt auto
R eg3d_nr64_r1_nchw 540 $CT --nr 64 --compile-mode reduce-overhead --phase-times --r1-layout nchw
R eg3d_nr64_cl_sr 540 $CT --nr 64 --compile-mode reduce-overhead --phase-times --channels-last superresolution
# 13. session 7: each of its changes undone in the full step (noise inputs in the super-resolution, NCHW
#     backbone and super-resolution, the gather lookup); the parts alone: python -m _scripts.bench.variants
R eg3d_nr64_sr_noise 540 $CT --nr 64 --compile-mode reduce-overhead --phase-times --sr-noise random
R eg3d_nr64_nchw 540 $CT --nr 64 --compile-mode reduce-overhead --phase-times --channels-last none
R eg3d_nr64_gather 540 $CT --nr 64 --compile-mode reduce-overhead --phase-times --lookup gather

# 11. the encoders compiled too (the ResNet-50 front encoder was eager: about 28 ms of a 230 ms step)
R eg3d_nr64_c_enc 400 $CT --nr 64
R eg3d_nr128_c_enc 400 $CT --nr 128

# 8. compiled train steps with the FIR filters unfolded (under torch.compile the filter passes fuse) and D
#    compiled for its first-order phases, R1 in bf16; only the training graphs are compiled (--train-only)
for nr in 64 128; do
    P="$EG3D --batch 16 --nr $nr --bf16 on --compile --compile-d --fold off --r1-bf16 --train-step --train-only"
    R eg3d_nr${nr}_c_unfolded 420 $P --profile --steps 16 --warmup 2 --mesh-res 0
    R eg3d_nr${nr}_c_unfolded_gather 420 $P --lookup gather --steps 16 --warmup 2 --mesh-res 0
done

$PY - "$OUT/bench_models.json" "$W" <<'PY' 2>&1 | tee -a "$LOG"
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

print(f"\nsummary ({out_path}); FLOPs are matmul/conv only, MFU vs dense bf16 peak")
print(f"{'run':26s} {'nr':>4s} {'bf16':>5s} {'comp':>5s} {'img/s':>7s} {'step ms':>8s} {'MFU':>6s} {'GF/img':>7s}"
      f" {'peak GiB':>8s} {'b1 ms':>7s} {'b1 comp ms':>10s}  error")
for name, res in out.items():
    if name == "_runs":
        continue
    for r in res:
        t = r.get("train_step") or {}
        mfu = g(r, "mfu", "train")
        errs = [e for e in (r.get("error"), t.get("error"), g(r, "G_inference_batch1_compiled", "error")) if e]
        print(f"{name:26s} {f(r.get('nr'), '4d')} {str(r.get('bf16')):>5s} {str(r.get('compile')):>5s} "
              f"{f(t.get('images_per_s'), '7.1f')} {f(t.get('ms_mean_with_r1'), '8.1f')} "
              f"{'-' if mfu is None else format(100 * mfu, '5.1f') + '%'} "
              f"{f(r.get('flops_per_train_image') and r['flops_per_train_image'] / 1e9, '7.1f')} "
              f"{f(t.get('peak_gib'), '8.2f')} {f(g(r, 'G_inference_batch1', 'ms'), '7.2f')} "
              f"{f(g(r, 'G_inference_batch1_compiled', 'ms'), '10.2f')}  {'; '.join(e[:80] for e in errs)}")
        if "mesh" in r:
            print(f"  mesh: {json.dumps(r['mesh'])}")
        if r.get("parts"):
            print("  parts fwd+bwd ms: " + ", ".join(f"{k} {f(v.get('ms'), '.1f')}" for k, v in r["parts"].items())
                  + f"; G fwd+bwd {f(g(r, 'G_forward_backward', 'ms'), '.1f')}, D fwd+bwd "
                  f"{f(g(r, 'D_forward_backward', 'ms'), '.1f')}")
for r in runs:
    print(f"run {r['name']}: rc {r['rc']} in {r['seconds']} s (timeout {r['timeout_s']} s)")
PY
save_inductor
rm -rf "$W"
