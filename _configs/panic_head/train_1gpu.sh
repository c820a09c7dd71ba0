#!/usr/bin/env bash
# PAniC-3D head (one front view) on 1 GPU, global batch 8.  Extra flags override.
NGPU=1 exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" --config _configs/panic_head/base.json \
    --run-name panic_head "$@"
