#!/usr/bin/env bash
# Install qoq-node on an air-gapped host from a wheelhouse made by build_wheelhouse.py, next to the
# host's own PyTorch: nothing is fetched from any network (pip --no-index), every wheel is checked
# against SHA256SUMS first, and torch/torchvision are taken as the host has them.
#
#   bash install.sh WHEELHOUSE VENV
#
# VENV is created with --system-site-packages from $PYTHON (default python3), so it sees the host's
# torch; an existing VENV is used as it is (give it access to torch yourself, e.g. with a .pth file).
set -euo pipefail
if [ "$#" -ne 2 ]; then
    echo "usage: bash install.sh WHEELHOUSE VENV" >&2
    exit 2
fi
wheelhouse=$(cd "$1" && pwd)
venv=$2
python=${PYTHON:-python3}

(cd "$wheelhouse" && sha256sum --check --quiet SHA256SUMS)
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv --system-site-packages "$venv"
fi
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "install.sh: the environment of $venv has no torch; the host's CUDA PyTorch is expected" >&2
    exit 1
fi
"$venv/bin/python" -m pip install --no-index --find-links "$wheelhouse" --no-cache-dir --quiet \
    --disable-pip-version-check 'qoq-node[transformers]'
"$venv/bin/python" -c "import torch, transformers, node; print(f'qoq-node {node.__version__} installed in $venv: torch {torch.__version__}, transformers {transformers.__version__}, CUDA available: {torch.cuda.is_available()}')"
