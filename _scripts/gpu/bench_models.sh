#!/usr/bin/env bash
# Model benchmarks at the REFERENCE configurations (issue 3), one JSON per config merged into $OUT/bench_models.json.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; PY=${PY:-python3}; T=${BENCH_S:-60}; mkdir -p "$OUT" /tmp/bench
timeout "$T" $PY -m _scripts.bench.models --preset eg3d_ffhq512 --batch 16 --nr 64 128 --bf16 both --train-step --steps 5 --warmup 2 --json /tmp/bench/eg3d.json
timeout "$T" $PY -m _scripts.bench.models --preset nova_body --batch 4 --bf16 both --train-step --steps 5 --warmup 2 --json /tmp/bench/nova.json
timeout "$T" $PY -m _scripts.bench.models --preset panic_head --batch 4 --bf16 both --train-step --steps 5 --warmup 2 --json /tmp/bench/panic.json
timeout "$T" $PY -m _scripts.bench.models --preset eg3d_ffhq512 --batch 1 --bf16 on --steps 10 --warmup 3 --json /tmp/bench/infer1.json
$PY - "$OUT/bench_models.json" /tmp/bench/*.json <<'PY'
import json, sys
out = {p.split("/")[-1][:-5]: json.load(open(p)) for p in sys.argv[2:]}
json.dump(out, open(sys.argv[1], "w"), indent=1)
PY
