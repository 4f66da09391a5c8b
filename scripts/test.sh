#!/usr/bin/env bash
# Install Refinery with its test extras and run the whole test suite (slow end-to-end tests
# included; they start a real Prefect server, SeaweedFS S3 and Ray themselves).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Browser tests drive Debian's Chromium (Playwright's own browser download is not used).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "the browser tests need Debian's chromium: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
