#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it, with optional extras ("test", "bench").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${1:+[$1]}"
# model files that are not Python packages (the lid.176 language-ID model), cached under ~/.cache/refinery
.venv/bin/refinery models fetch >/dev/null
