#!/usr/bin/env bash
# Ablation 'nova_v0_concat': concatenation fusion (TriPlaneGenerator_v0) instead of direction-aware attention.
# Runs (and resumes) in _train/eg3dc/runs/nova_v0_concat/<NNNNN>/.  Extra flags override.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NGPU=${NGPU:-4} exec "$here/../../../../_configs/launch.sh" --run-name nova_v0_concat \
    --config _configs/nova_body/base.json --generator TriPlaneGenerator_v0 "$@"
