#!/usr/bin/env bash
# Install Refinery and run the main job: the bundled default input, curated into
# ~/.refinery/corpus with a local Prefect server and a local Ray. Extra arguments go to `refinery run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/refinery run "$@"
