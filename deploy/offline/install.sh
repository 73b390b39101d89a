#!/usr/bin/env bash
# Install qoq-node on an air-gapped host from a wheelhouse made by build_wheelhouse.py, next to the
# host's own PyTorch: nothing is fetched from any network (pip --no-index), every wheel and
# requirements.txt is checked against SHA256SUMS first (a wheel it does not list is refused), the
# wheelhouse's requirements.txt is installed (the node with its [transformers] extra, and what
# build_wheelhouse.py --with added), and what the host already has
# (torch, torchvision; with a host file transformers, tokenizers, numpy...) is kept as the host has it.
#
#   PYTHON=/opt/torch/.venv/bin/python3 bash install.sh WHEELHOUSE VENV
#
# VENV is created from the host's Python ($PYTHON, default python3) --without-pip (a host Python may have
# no ensurepip) and sees the host's packages through a .pth file that adds each of that Python's site
# directories (site.addsitedir, so the .pth files inside them count too) AFTER VENV's own: a carried
# newer package shadows the host's older one. Not --system-site-packages: where $PYTHON is itself a
# virtual environment, that would show the base interpreter's packages, not the host environment's.
# An existing VENV is used as it is, its .pth file written again when missing or empty.
#
# pip is the one carried in the wheelhouse, run from its wheel (pip-*.whl/pip, which pip supports): the
# host's Python may have no pip, and the install does not depend on which pip, if any, the host has.
set -euo pipefail
if [ "$#" -ne 2 ]; then
    echo "usage: [PYTHON=host-python] bash install.sh WHEELHOUSE VENV" >&2
    exit 2
fi
wheelhouse=$(CDPATH='' cd -- "$1" && pwd)
venv=$2
python=${PYTHON:-python3}

(cd "$wheelhouse" && sha256sum --check --quiet SHA256SUMS)
# pip --find-links sees every wheel in the folder: none may be there that SHA256SUMS does not vouch for
for wheel in "$wheelhouse"/*.whl; do
    if ! cut -d' ' -f3- "$wheelhouse/SHA256SUMS" | grep -qxF -- "${wheel##*/}"; then
        echo "install.sh: ${wheel##*/} is not listed in SHA256SUMS; remove it or rebuild the wheelhouse" >&2
        exit 1
    fi
done
pip_wheels=("$wheelhouse"/pip-*-py3-none-any.whl)
if [ "${#pip_wheels[@]}" -ne 1 ] || [ ! -f "${pip_wheels[0]}" ]; then
    echo "install.sh: $wheelhouse should hold exactly one pip wheel (build_wheelhouse.py carries it)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv --without-pip "$venv"
fi
site_packages=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
host_site=$site_packages/qoq-node-host-site.pth
if [ ! -s "$host_site" ]; then  # written whole or not at all: a failed try leaves no empty file behind
    "$python" -c 'import os, site
for directory in site.getsitepackages():
    if os.path.isdir(directory):
        print(f"import site; site.addsitedir({directory!r})")' > "$host_site.partial"
    mv "$host_site.partial" "$host_site"
fi
if ! import_error=$("$venv/bin/python" -c "import torch" 2>&1); then
    echo "install.sh: the environment of $venv cannot import torch (${import_error##*$'\n'});" \
        "the host's CUDA PyTorch is expected in $python's site-packages (PYTHON=...)" >&2
    exit 1
fi
# no pip configuration file nor PIP_* variable of the host's counts: the wheelhouse is the only source
PIP_CONFIG_FILE=/dev/null "$venv/bin/python" "${pip_wheels[0]}/pip" --isolated install --no-index \
    --find-links "$wheelhouse" --no-cache-dir --quiet --disable-pip-version-check \
    --requirement "$wheelhouse/requirements.txt"
"$venv/bin/python" -c "import sys, torch, transformers, node; print(f'qoq-node {node.__version__} installed in {sys.argv[1]}: torch {torch.__version__}, transformers {transformers.__version__}, CUDA available: {torch.cuda.is_available()}')" "$venv"
