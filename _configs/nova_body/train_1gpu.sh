#!/usr/bin/env bash
# NOVA-3D full body (recipe _configs/recipes/nova_body.toml) on 1 GPU(s), global batch 4 (4 per GPU: 8 per GPU
# does not fit in 80 GB, docs/training.md).  Extra flags override, e.g. --run-name, --kimg, --data-root.
NGPU=1 exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" --config nova_body --run-name nova_body --batch 4 "$@"
