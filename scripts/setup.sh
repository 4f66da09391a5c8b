#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it, with optional extras ("test", "bench").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
TARGET=".${1:+[$1]}"
# uv (from PyPI) downloads and installs in parallel: the default install takes about 15 s with an
# empty cache, where pip takes minutes. pip stays the fallback, e.g. where uv cannot be installed.
# --compile-bytecode, as pip does by default: uv leaves no .pyc, so where PYTHONDONTWRITEBYTECODE
# is set (or site-packages is read-only) every worker process compiled spaCy, datatrove, numba and
# pandas from source again, about 2.8 of a quality worker's 4.8 CPU-s of start-up (docs/quality.md)
if .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9" \
    && .venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python -e "$TARGET"; then
  :
else
  echo "setup: installing with pip instead of uv" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$TARGET"
fi
# The project itself is installed editable, so the line above compiles none of it: every Ray worker
# and quality worker would compile tasks/ and flows/ again under PYTHONDONTWRITEBYTECODE
.venv/bin/python -m compileall -q -j 0 tasks flows >/dev/null
# model files that are not Python packages (the lid.176 language-ID model), cached under ~/.cache/refinery
.venv/bin/refinery models fetch >/dev/null
