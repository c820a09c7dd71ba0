#!/usr/bin/env bash
# Ablation 'nova_v1': full NOVA-3D: PAT back encoder, attention fusion, mask branch + alpha loss.
# Runs (and resumes) in _train/eg3dc/runs/nova_v1/<NNNNN>/.  Extra flags override.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NGPU=${NGPU:-4} exec "$here/../../../../_configs/launch.sh" --run-name nova_v1 \
    --config _configs/nova_body/base.json "$@"
