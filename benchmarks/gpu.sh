#!/usr/bin/env bash
# The GPU figures on an air-gapped GPU host, in one command: install the node from a wheelhouse
# (deploy/offline/build_wheelhouse.py, made on a connected machine) into a virtual environment that
# sees the host's own CUDA torch, then run the one-run benchmark (benchmarks/gpu.py) within its budget.
#
#   PYTHON=/opt/torch/.venv/bin/python3 bash benchmarks/gpu.sh WHEELHOUSE OUT [benchmarks.gpu options, e.g. --budget-s 400]
#
# PYTHON is the host's Python with its CUDA torch (default python3), passed to install.sh. The whole command
# keeps within QOQ_GPU_TOTAL_S seconds (480): the benchmark gets what the install left, unless --budget-s
# says otherwise. Run it from a checkout of the repository (the benchmarks are not part of the installed
# node); WHEELHOUSE and OUT may be relative to the directory it is started from.
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: [PYTHON=host-python] bash benchmarks/gpu.sh WHEELHOUSE OUT [options]" >&2
    exit 2
fi
wheelhouse=$(CDPATH='' cd -- "$1" && pwd)
case $2 in
    /*) out=$2 ;;
    *) out=$PWD/$2 ;;
esac
shift 2
cd "$(dirname "$0")/.."
venv=${QOQ_NODE_VENV:-${TMPDIR:-/tmp}/qoq-node-gpu-venv}
# The whole command's time, install included, unless --budget-s gives the benchmark's own.
total_s=${QOQ_GPU_TOTAL_S:-480}
started=$(date +%s)
echo "gpu.sh: 1) install qoq-node from $wheelhouse into $venv next to ${PYTHON:-python3}'s packages (~15 s);" \
    "2) python -m benchmarks.gpu with what is left of ${total_s} s (its plan follows)"
PYTHON=${PYTHON:-python3} bash deploy/offline/install.sh "$wheelhouse" "$venv"
spent=$(( $(date +%s) - started ))
echo "gpu.sh: installed in ${spent} s"
case " $* " in
    *" --budget-s"*) ;;
    *) set -- "$@" --budget-s $(( total_s - spent )) ;;
esac
"$venv/bin/python" -m benchmarks.gpu --out "$out" "$@"
