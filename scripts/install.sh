#!/usr/bin/env bash
# install.sh - install cman and its test tools into ./.venv (idempotent; reinstalls
# only when the sources changed). A regular, byte-compiled install rather than an
# editable one: the editable finder and missing .pyc files cost ~40 ms per start.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.cman-installed
if [[ ! -f $stamp ]] || [[ -n $(find pyproject.toml cman -newer "$stamp" -print -quit) ]]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check '.[test]'
    # pip builds in a temp dir; the checkout's own .pyc files help `python -m cman` in tests
    PYTHONDONTWRITEBYTECODE= .venv/bin/python -m compileall -q cman
    touch "$stamp"
fi
echo "[install] cman $(.venv/bin/cman --version | cut -d' ' -f2) in $(pwd)/.venv"
