#!/usr/bin/env bash
# Model benchmarks at the REFERENCE configurations (issue 3) in one GPU call of about 9 minutes.
# Writes $OUT/bench_models.json ({run name: [one entry per configuration], "_runs": [...]}) and the printed
# log $OUT/bench_models.log.  Runs in order of importance, each under its own timeout (at most its cap and
# the time left of BENCH_TOTAL_S); a run that times out keeps the configurations it finished (the benchmark
# rewrites its JSON after each one); runs that no longer fit are listed as skipped.
#   PY=python3 PYTHONPATH=. OUT=/tmp/out _scripts/gpu/bench_models.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; PY=${PY:-python3}; TOTAL=${BENCH_TOTAL_S:-540}
mkdir -p "$OUT"
W=$(mktemp -d /tmp/bench_models.XXXXXX)
LOG="$OUT/bench_models.log"; : > "$LOG"
export PYTHONUNBUFFERED=1
END=$((SECONDS + TOTAL))
EG3D="--preset eg3d_ffhq512 --device cuda"
COMMON="--steps 5 --warmup 2 --mesh-res 0"

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

# 1. EG3D FFHQ-512 sizes, batch 16, NR 64, bf16, compiled: the headline training throughput (issue: >= 100 img/s)
run eg3d_nr64_bf16_compiled 180 $EG3D --batch 16 --nr 64 --bf16 on --compile --train-step --steps 5 --warmup 3 --mesh-res 0
# 2. the same eager, fp32/tf32 and bf16
run eg3d_nr64_eager 90 $EG3D --batch 16 --nr 64 --bf16 both --train-step $COMMON
# 3. batch-1 inference eager + whole forward compiled with CUDA graphs (issue: <= 8 ms), mesh 256^3
run eg3d_infer_b1 120 $EG3D --batch 1 --nr 64 --bf16 on --steps 10 --warmup 3 --compile-infer reduce-overhead \
    --mesh-res 256 --mesh-level median
# 4. NR 128 eager (issue: >= 50 img/s)
run eg3d_nr128_eager 120 $EG3D --batch 16 --nr 128 --bf16 both --train-step $COMMON
# 5. NOVA-3D body and PAniC-3D head presets
run nova_body 60 --preset nova_body --device cuda --batch 4 --bf16 both --train-step $COMMON
run panic_head 60 --preset panic_head --device cuda --batch 8 --bf16 both --train-step $COMMON
# 6. the rest of the compile grid, as time allows
run eg3d_nr128_bf16_compiled 120 $EG3D --batch 16 --nr 128 --bf16 on --compile --train-step --steps 5 --warmup 3 --mesh-res 0
run eg3d_fp32_compiled 120 $EG3D --batch 16 --nr 64 128 --bf16 off --compile --train-step --steps 5 --warmup 3 --mesh-res 0

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
for r in runs:
    print(f"run {r['name']}: rc {r['rc']} in {r['seconds']} s (timeout {r['timeout_s']} s)")
PY
rm -rf "$W"
