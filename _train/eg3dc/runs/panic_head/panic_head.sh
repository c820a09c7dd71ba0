#!/usr/bin/env bash
# Ablation 'panic_head': PAniC-3D single-view head baseline.
# Runs (and resumes) in _train/eg3dc/runs/panic_head/<NNNNN>/.  Extra flags override.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NGPU=${NGPU:-1} exec "$here/../../../../_configs/launch.sh" --run-name panic_head \
    --config _configs/panic_head/base.json "$@"
