#!/usr/bin/env bash
# The GPU figures on an air-gapped GPU host, in one command: install the node from a wheelhouse
# (deploy/offline/build_wheelhouse.py, made on a connected machine) into a virtual environment that
# sees the host's own CUDA torch, then run the one-run benchmark (benchmarks/gpu.py) within its budget.
#
#   bash benchmarks/gpu.sh WHEELHOUSE OUT [benchmarks.gpu options, e.g. --budget-s 400]
#
# Run it from a checkout of the repository (the benchmarks are not part of the installed node).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -lt 2 ]; then
    echo "usage: bash benchmarks/gpu.sh WHEELHOUSE OUT [options]" >&2
    exit 2
fi
wheelhouse=$1
out=$2
shift 2
venv=${QOQ_NODE_VENV:-${TMPDIR:-/tmp}/qoq-node-gpu-venv}
bash deploy/offline/install.sh "$wheelhouse" "$venv"
"$venv/bin/python" -m benchmarks.gpu --out "$out" "$@"
