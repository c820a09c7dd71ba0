#!/usr/bin/env bash
# NOVA-3D full body (front + back views, attention fusion, mask discriminator) on 1 GPU(s).
# Global batch 4 (4 per GPU).  Extra flags override, e.g. --run-name, --kimg, --data-root.
NGPU=1 exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" --config _configs/nova_body/base.json \
    --run-name nova_body --batch 4 "$@"
