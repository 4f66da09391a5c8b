"""The whole default job on the standard corpus: ``refinery run`` with the default stages and
the quality stage on (ingest, exact and near dedup, quality with every tagger and its default
rules), timed as a user waits for it.

Issue 23's target for the whole job is ≥ 3,000 documents/s on 2 cores at 200k documents. The
run is timed from launch to exit with the Prefect server already up (started and timed
separately, as ``bench/minhash_vs_datatrove.py`` does), and the run's own breakdown says where
the time went (``bench.common.run_breakdown``: stage wall times, step seconds and the workers'
CPU seconds per step, orchestration, outside the stages).

    python bench/default_job.py [--docs 100000] [--files 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import run_breakdown, scratch_dir, standard_corpus, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--name", default=None,
                    help="Results file name under bench/results (default: default_job_<docs/1000>k).")
    args = ap.parse_args()
    corpus = standard_corpus(args.docs, args.files)
    info = json.loads((corpus / "corpus.json").read_text())
    work = scratch_dir("refinery-default-job-")
    home = work / "home"
    env = {**os.environ, "REFINERY_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    cli = shutil.which("refinery", path=str(Path(sys.executable).parent)) or "refinery"
    config = work / "job.yaml"
    # the default stages and settings, with the quality stage on (every tagger, the default
    # rules); only the input and the root are named
    config.write_text(json.dumps({"release": "default-job", "output": str(work / "corpus"),
                                  "inputs": [{"uri": str(corpus / "docs"), "source": "bench",
                                              "columns": {"text": "text", "id": "id"}}],
                                  "quality": {"enabled": True}}))
    from bench.minhash_vs_datatrove import timed_process
    from flows.stack import Stack, free_port

    stack = Stack(home)
    t0 = time.perf_counter()
    stack.up(prefect_port=free_port(), with_s3=False)
    server_s = time.perf_counter() - t0
    try:
        env.update(stack.environment())
        seconds, mem = timed_process([cli, "run", "-c", str(config)], env)
    finally:
        stack.down()
    root = work / "corpus"
    manifest = json.loads((root / "releases" / "default-job" / "manifest.json").read_text())
    workers = int(manifest["cluster"]["ray_cpus"]) or 1
    breakdown = run_breakdown(root, "default-job", seconds, workers)
    docs = info["docs"]
    quality_in = next((st["docs_in"] for st in manifest["funnel"] if st["stage"] == "quality"), 0)
    result = {
        "corpus": {k: info[k] for k in ("docs", "duplicates", "files", "seed", "bytes", "words")},
        "stages": manifest["stages"],
        "quality_taggers": manifest.get("quality", {}).get("taggers"),
        "prefect_server_start_seconds": round(server_s, 2),
        "refinery": {"seconds": round(seconds, 2), "docs_per_s": round(docs / seconds),
                     "docs_per_s_per_core": round(docs / seconds / workers), "workers": workers,
                     "published": manifest["totals"]["documents"],
                     # the quality stage sees what dedup left: its docs over its steps' CPU seconds
                     "quality_docs_per_cpu_second": round(quality_in / breakdown["step_cpu_seconds"]["quality"])
                     if breakdown["step_cpu_seconds"].get("quality") else None,
                     "breakdown": breakdown},
        "target_docs_per_s_on_2_cores_at_200k": 3000,
    }
    path = write_results(args.name or f"default_job_{docs // 1000}k", result)
    print(f"{docs:,} docs, {workers} workers: {seconds:.1f} s ({docs / seconds:,.0f} docs/s), "
          f"published {manifest['totals']['documents']:,}; stages {manifest['stages']}")
    print(json.dumps(breakdown, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
