#!/usr/bin/env bash
# PAniC-3D head (recipe _configs/recipes/panic_head.toml) on 1 GPU, global batch 8.  Extra flags override.
NGPU=1 exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" --config panic_head --run-name panic_head "$@"
