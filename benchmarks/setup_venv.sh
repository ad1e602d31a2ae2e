#!/bin/sh
# Create benchmarks/.venv with the OpenSSF model-signing CLI used as the comparison point.
# Usage: benchmarks/setup_venv.sh   (idempotent; needs network access to PyPI once)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv"
if [ ! -x "$venv/bin/model_signing" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "model-signing==1.1.*" pyopenssl
fi
"$venv/bin/pip" show model-signing | sed -n 's/^Version: /model-signing /p'
