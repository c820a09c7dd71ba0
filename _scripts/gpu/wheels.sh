#!/usr/bin/env bash
# Download the wheels an offline GPU machine needs beyond its own PyTorch image (the data, training and
# evaluation jobs' packages, versions from requirements.txt, and pytest for the GPU-only tests) into DIR,
# for that machine's Python:
#   _scripts/gpu/wheels.sh [DIR] [PYTHON_VERSION]          # default .whl 3.12
# On the GPU machine: pip install --no-index --no-deps --target /tmp/site DIR/*.whl; PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.whl}; PYV=${2:-3.12}
pin() { grep -E "^$1==" requirements.txt | head -1 || echo "$1"; }
PKGS=("$(pin trimesh)" "$(pin pygltflib)" "$(pin moderngl)" "$(pin glcontext)" "$(pin rtree)" "$(pin kornia)"
      kornia_rs dataclasses-json deprecated marshmallow typing-inspect mypy-extensions
      pytest pluggy iniconfig)      # pytest: the GPU-only tests (python3 -m pytest -p no:cacheprovider ...)
mkdir -p "$DIR"
for p in "${PKGS[@]}"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$DIR" "$p"
done
ls -1 "$DIR"
