#!/usr/bin/env bash
# Regenerate every bench/results/*.json at one commit (each file records it).
#
#   bench/run_all.sh [--docs N] [--big-docs N] [--skip-default-tokenizer] [--skip-models]
#
# --docs: corpus size of the throughput benchmarks (default 10000, minutes on 2 cores);
# --big-docs: also run the near-dedup comparison at this size (e.g. 100000 or 1000000);
# --skip-default-tokenizer: leave out datatrove with spaCy (slow: about 50 docs/s per core);
# --skip-models: leave out the benchmarks that need the local GGUF models (prox, leaner).
set -euo pipefail

DOCS=10000
BIG_DOCS=""
DT_FLAGS=""
DT_FLAGS_DECONTAM=""
MODELS=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --docs) DOCS="$2"; shift 2 ;;
    --big-docs) BIG_DOCS="$2"; shift 2 ;;
    --skip-default-tokenizer) DT_FLAGS="--skip-default-tokenizer"; DT_FLAGS_DECONTAM="--skip-datatrove-default"; shift ;;
    --skip-models) MODELS=0; shift ;;
    *) echo "run_all.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
# one commit for every file: refuse to measure uncommitted code
if [[ -n "$(git status --porcelain --untracked-files=no -- . ':(exclude)bench/results')" ]]; then
  echo "run_all.sh: the checkout has uncommitted changes; commit first so the results name a real commit" >&2
  exit 1
fi
echo "commit $(git rev-parse HEAD), load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

run() { echo "== $*"; "$PY" "$@"; }

run bench/ingest_throughput.py --docs "$DOCS"
run bench/minhash_vs_datatrove.py --docs "$DOCS" $DT_FLAGS
if [[ -n "$BIG_DOCS" ]]; then
  run bench/minhash_vs_datatrove.py --docs "$BIG_DOCS" --files 16 $DT_FLAGS
fi
run bench/scaling_plot.py
run bench/signature_throughput.py --docs "$DOCS"
run bench/quality_vs_datatrove.py --docs "$DOCS"
run bench/quality_vs_datatrove.py --score-only --docs "$DOCS"
run bench/lid_compiled.py --corpus-docs "$DOCS"  # issue 23: compiled language ID against fastText
run bench/default_job.py --docs "${BIG_DOCS:-$DOCS}" --files 16  # issue 23: the whole default job
run bench/memory_scaling.py --base "$DOCS"
run bench/memory_scaling.py --base "$DOCS" --short
run bench/decontam_bench.py --docs "$DOCS" $DT_FLAGS_DECONTAM
run bench/token_count_bench.py --docs "$DOCS"
run bench/token_count_run.py  # 100,000 documents: three real runs
run bench/task_overhead.py  # a Prefect task run's fixed cost on Ray, ours against prefect-ray's
run bench/serve_runs.py --docs "${BIG_DOCS:-$DOCS}" --files 16  # served runs: one Ray per serve process against one per run
run bench/leaner_unseen_pages.py --label shipped_all_positions
if [[ "$MODELS" == 1 ]]; then
  run bench/prox_bench.py --docs "$DOCS"
  run bench/leaner_bench.py
fi
"$PY" -m pytest -q tests/test_bench_claims.py
