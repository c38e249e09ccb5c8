#!/usr/bin/env bash
# Set up a virtual environment (CPU torch, Triton for the interpreter, test tools) and run every test:
# unit and property tests, and the three notebooks end to end through the report runner on the tiny
# CPU preset (tests/test_notebooks.py; the ci preset is the notebooks' own defaults, which that file
# also checks, so a notebook that fails for a user fails here). To run the notebooks under nbval as
# well (a second execution of each):  .venv/bin/python -m pytest --nbval-lax --nbval-current-env notebooks
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
# torch 2.13.0: on machines without a GPU this is the CPU build (kept on local disk here)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[test]"
export TRITON_INTERPRET=1 MPLBACKEND=Agg PYTHONHASHSEED=0
start=$(date +%s)
# -n auto: one pytest worker per core (pytest-xdist), whole files to a worker (the notebooks' first)
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -n auto --dist loadfile --durations=10 tests "$@"
echo "tests: $(( $(date +%s) - start )) s"
