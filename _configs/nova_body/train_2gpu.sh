#!/usr/bin/env bash
# NOVA-3D full body (front + back views, attention fusion, mask discriminator) on 2 GPU(s).
# Global batch 8 (4 per GPU: 8 per GPU does not fit in 80 GB, see docs/training.md).  Extra flags override, e.g. --run-name, --kimg, --data-root.
NGPU=2 exec "$(dirname "${BASH_SOURCE[0]}")/../launch.sh" --config _configs/nova_body/base.json \
    --run-name nova_body --batch 8 "$@"
