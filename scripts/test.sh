#!/usr/bin/env bash
# Install Refinery with its test extras and run the whole test suite (slow end-to-end tests
# included; they start a real Prefect server, SeaweedFS S3 and Ray themselves).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
