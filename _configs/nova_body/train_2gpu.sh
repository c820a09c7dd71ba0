#!/usr/bin/env bash
# NOVA-3D full body (recipe _configs/recipes/nova_body.toml) on 2 GPU(s), global batch 8 (4 per GPU, at the limit of
# an 80 GB GPU: docs/training.md, "Speed and memory").  Extra flags override, e.g. --run-name, --kimg, --data-root.
NGPU=2 exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" --config nova_body --run-name nova_body --batch 8 "$@"
