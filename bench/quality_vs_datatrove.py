"""Quality filtering: Refinery's quality stage against the same datatrove filters run natively.

One run, same machine, same cores, same corpus (../shared/bench/make_corpus.py), same four
filters with datatrove's default parameters (Gopher repetition, Gopher quality, C4 quality,
FineWeb quality, in FineWeb's order):

- datatrove: ParquetReader → the four filters → ParquetWriter under LocalPipelineExecutor
  (one task per input file, one worker per core);
- refinery: the ``curate`` flow end to end (ingest, quality with ``short_circuit`` so that,
  as in datatrove, a dropped document is not shown to later filters, publish: Prefect task
  runs on local Ray), C4 as a modifier (as in datatrove's pipeline, where FineWeb sees the
  text C4 leaves), dedup off, language ID off (datatrove's needs a model download).

Prints docs/s of each, the ratio, our orchestration overhead (our time over datatrove's, minus
one: for the whole flow, which also ingests, and for the quality stage alone) and whether the
kept documents are the same set.

    python bench/quality_vs_datatrove.py [--docs 20000] [--files 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ensure_prefect, standard_corpus, write_results  # noqa: E402
from bench.minhash_vs_datatrove import PeakRSS  # noqa: E402

WORKERS = os.cpu_count() or 1


def datatrove_run(corpus: Path, work: Path) -> tuple[float, set[str]]:
    import pyarrow.parquet as pq
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    files = len(list((corpus / "docs").glob("*.parquet")))
    t0 = time.perf_counter()
    LocalPipelineExecutor([
        ParquetReader(str(corpus / "docs"), text_key="text", id_key="id"),
        GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter(),
        ParquetWriter(str(work / "out")),
    ], tasks=files, workers=WORKERS, logging_dir=str(work / "logs")).run()
    seconds = time.perf_counter() - t0
    kept: set[str] = set()
    for f in (work / "out").rglob("*.parquet"):
        kept |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return seconds, kept


def refinery_run(corpus: Path, work: Path) -> tuple[float, set[str], dict]:
    import pyarrow.parquet as pq

    from flows.curate import run_curate
    from tasks.config import PipelineConfig
    from tasks.ingest import stable_id

    cfg = PipelineConfig(
        release="bench-quality", output=str(work / "corpus"),
        inputs=[{"uri": str(corpus / "docs"), "source": "bench", "columns": {"text": "text", "id": "id"}}],
        exact_dedup={"enabled": False}, near_dedup={"enabled": False},
        # C4 as a modifier: in datatrove's pipeline FineWeb sees the text C4 leaves
        quality={"enabled": True, "short_circuit": True, "language_id": {"enabled": False},
                 "c4_quality": {"mode": "modify"}},
    )
    t0 = time.perf_counter()
    manifest = run_curate(cfg)
    seconds = time.perf_counter() - t0
    kept_ids: set[str] = set()
    for f in manifest["outputs"]["documents"]:
        kept_ids |= set(pq.read_table(work / "corpus" / f["path"], columns=["id"]).column("id").to_pylist())
    source_ids: set[str] = set()
    for f in sorted((corpus / "docs").glob("*.parquet")):
        source_ids |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return seconds, {sid for sid in source_ids if stable_id("bench", sid, "") in kept_ids}, manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=8)
    args = ap.parse_args()
    corpus = standard_corpus(args.docs, args.files)
    docs = json.loads((corpus / "corpus.json").read_text())["docs"]
    work = Path(tempfile.mkdtemp(prefix="refinery-quality-bench-"))
    ensure_prefect(work / "home")

    with PeakRSS() as mem:
        ours_s, ours_kept, manifest = refinery_run(corpus, work / "refinery")
    ours = {"seconds": round(ours_s, 2), "docs_per_s": round(docs / ours_s), "peak_rss_mb": mem.peak >> 20,
            "kept": len(ours_kept), "stage_seconds": manifest["timing"], "rules": manifest["quality"]["rules"]}
    print("refinery", json.dumps(ours), flush=True)
    with PeakRSS() as mem:
        dt_s, dt_kept = datatrove_run(corpus, work / "datatrove")
    theirs = {"seconds": round(dt_s, 2), "docs_per_s": round(docs / dt_s), "peak_rss_mb": mem.peak >> 20,
              "kept": len(dt_kept)}
    print("datatrove", json.dumps(theirs), flush=True)
    result = {
        "docs": docs, "files": args.files, "workers": WORKERS,
        "filters": ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"],
        "refinery": ours, "datatrove": theirs,
        "speedup": round(dt_s / ours_s, 3),
        "overhead": round(ours_s / dt_s - 1, 4),
        # the stage alone (its Prefect task runs on Ray, reading the ingested shards and writing
        # documents, attributes and rejects) against datatrove's whole read-filter-write pipeline
        "stage_overhead": round(manifest["timing"]["quality"] / dt_s - 1, 4),
        "same_kept_documents": ours_kept == dt_kept,
        "kept_differences": len(ours_kept ^ dt_kept),
    }
    path = write_results("quality_vs_datatrove", result)
    print(f"\nrefinery {ours['docs_per_s']:,} docs/s vs datatrove {theirs['docs_per_s']:,} docs/s: "
          f"ratio {result['speedup']}x, whole flow {result['overhead']:+.1%} (ingest, Ray start included), "
          f"quality stage alone {result['stage_overhead']:+.1%}; "
          f"same kept documents: {result['same_kept_documents']} -> {path}")


if __name__ == "__main__":
    main()
