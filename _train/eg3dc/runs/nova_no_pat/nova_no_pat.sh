#!/usr/bin/env bash
# Ablation 'nova_no_pat': one ResNet for both views instead of the Patch Aggregation Transformer for the back.
# Runs (and resumes) in _train/eg3dc/runs/nova_no_pat/<NNNNN>/.  Extra flags override.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NGPU=${NGPU:-4} exec "$here/../../../../_configs/launch.sh" --run-name nova_no_pat \
    --config _configs/nova_body/base.json --g-kwargs '{"encoder_weights": "imagenet", "back_encoder": "resnet"}' "$@"
