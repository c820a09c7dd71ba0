#!/usr/bin/env bash
# Ablation 'nova_no_mask': no masks: no mask encoder, plain DualDiscriminator (no mask branch), no alpha loss.
# Runs (and resumes) in _train/eg3dc/runs/nova_no_mask/<NNNNN>/.  Extra flags override.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NGPU=${NGPU:-4} exec "$here/../../../../_configs/launch.sh" --run-name nova_no_mask \
    --config _configs/nova_body/base.json --g-kwargs '{"encoder_weights": "imagenet", "use_mask": false}' --discriminator DualDiscriminator --alpha-weight 0 "$@"
