#!/usr/bin/env bash
# Shared launcher: NGPU processes on this node (torchrun when > 1), flags passed on to the trainer.
#   NGPU=4 _configs/launch.sh --config nova_body --run-name nova_v1            (a recipe of _configs/recipes/)
#   NGPU=4 _configs/launch.sh --config ablations/nova_no_pat --run-name nova_no_pat
# Multi-node: set NNODES, NODE_RANK and RDZV_ENDPOINT=host:port on every node (same RDZV_ID).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source _env/load.sh                 # activates .venv when present
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "error: $(command -v "$PYTHON" || echo "$PYTHON"): cannot import torch; run make/setup (creates .venv)" \
         "or set PYTHON to an interpreter that has the requirements" >&2
    exit 2
fi
NGPU="${NGPU:-1}"
if [ "$NGPU" -le 1 ] && [ -z "${NNODES:-}" ]; then
    exec "$PYTHON" -m _train.eg3dc.train "$@"
fi
if [ -n "${NNODES:-}" ]; then
    rdzv=(--nnodes "$NNODES" --rdzv-backend c10d --rdzv-endpoint "${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port}"
          --rdzv-id "${RDZV_ID:-anime3d}")
else
    rdzv=(--standalone)
fi
exec "$PYTHON" -m torch.distributed.run "${rdzv[@]}" --nproc-per-node "$NGPU" -m _train.eg3dc.train "$@"
