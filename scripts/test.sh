#!/usr/bin/env bash
# Set up a virtual environment (CPU torch, Triton for the interpreter, test tools) and run every test:
# unit and property tests, then the notebooks under nbval with the tiny CPU preset.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
# torch 2.13.0: on machines without a GPU this is the CPU build (kept on local disk here)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[test]"
export TRITON_INTERPRET=1 MPLBACKEND=Agg PYTHONHASHSEED=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks
