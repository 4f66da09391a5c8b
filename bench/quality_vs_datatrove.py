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
kept documents are the same set. The combined quality score is off in that comparison
(datatrove has no counterpart); its own cost is measured separately, in process: the quality
stage's default taggers (language ID and the four filters, every document through every
tagger) against the combined score on top of them, on the same documents
(``bench/results/quality_score_cost.json``).

The flow runs twice, with ``quality.engine: fast`` (the default) and ``quality.engine:
datatrove``, beside datatrove's own pipeline; the fast engine's fallback share (documents whose
decision needed datatrove's classes) comes from the run's quality markers.

``--verify`` checks the fast engine against datatrove's classes on every document of the
corpus, in-process, one worker per core (``nice``): same pass/fail, reason, C4 lines and text,
and times each engine in CPU seconds (docs/s per core) with the fallback share
(``bench/results/quality_engine_verify.json``; any difference is listed by document id).

    python bench/quality_vs_datatrove.py [--docs 20000] [--files 8]
    python bench/quality_vs_datatrove.py --score-only [--score-docs 5000]
    python bench/quality_vs_datatrove.py --verify --docs 200000 --files 16
    python bench/quality_vs_datatrove.py --verify --docs 20000 --files 8 --name quality_engine_verify_20k
    python bench/quality_vs_datatrove.py --fast-only --docs 100000 --files 16 --name quality_engine_fast_100k
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MB, PeakRSS, ensure_prefect, scratch_dir, standard_corpus, write_results  # noqa: E402

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


def refinery_run(corpus: Path, work: Path, engine: str = "fast") -> tuple[float, set[str], dict]:
    import pyarrow.parquet as pq

    from flows.curate import run_curate
    from tasks.config import PipelineConfig
    from tasks.ingest import stable_id

    cfg = PipelineConfig(
        release="bench-quality", output=str(work / "corpus"),
        inputs=[{"uri": str(corpus / "docs"), "source": "bench", "columns": {"text": "text", "id": "id"}}],
        exact_dedup={"enabled": False}, near_dedup={"enabled": False},
        # C4 as a modifier: in datatrove's pipeline FineWeb sees the text C4 leaves
        quality={"enabled": True, "short_circuit": True, "language_id": {"enabled": False}, "engine": engine,
                 "c4_quality": {"mode": "modify"}, "combined": {"enabled": False}},
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


def _verify_file(path: str) -> dict:
    import pyarrow.parquet as pq

    from tasks.quality.fast.tokenizer import fast_tokenizer
    from tasks.quality.verify_fast import compare

    t = pq.read_table(path, columns=["id", "text"])
    res = compare(t.column("text").to_pylist(), [str(x) for x in t.column("id").to_pylist()])
    return {"file": Path(path).name, "documents": res.documents, "fallbacks": res.fallbacks,
            "fast_cpu_s": res.fast_cpu_s, "datatrove_cpu_s": res.datatrove_cpu_s,
            "slow_tokenized_in_worker_so_far": fast_tokenizer("en").slow_docs, "differences": res.differences[:20],
            "n_differences": len(res.differences)}


def _fast_file(path: str) -> dict:
    import pyarrow.parquet as pq

    from tasks.quality import heuristics
    from tasks.quality.fast.tokenizer import fast_tokenizer
    from tasks.quality.verify_fast import default_specs

    t = pq.read_table(path, columns=["id", "text"])
    texts, ids = t.column("text").to_pylist(), [str(x) for x in t.column("id").to_pylist()]
    t0 = time.process_time()
    out = heuristics.tag_all(default_specs(), texts, ids, False, engine="fast")
    return {"file": Path(path).name, "documents": len(texts), "fast_cpu_s": round(time.process_time() - t0, 3),
            "fallbacks": out.fallbacks, "slow_tokenized_in_worker_so_far": fast_tokenizer("en").slow_docs}


def fast_only(corpus: Path, workers: int) -> dict:
    """The fast engine alone, as ``--verify`` runs it (one process per core taking whole files,
    caches cold at the start), without datatrove's classes: a quick speed figure on a corpus too
    large to verify in the time at hand. Identity is ``--verify``'s and the tests' business."""
    import subprocess
    from concurrent.futures import ProcessPoolExecutor

    files = [str(f) for f in sorted((corpus / "docs").glob("*.parquet"))]
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, initializer=_be_nice) as pool:
        rows = list(pool.map(_fast_file, files))
    docs = sum(r["documents"] for r in rows)
    cpu = sum(r["fast_cpu_s"] for r in rows)
    return {"corpus": corpus.name, "docs": docs, "files": len(files), "workers": workers,
            "wall_seconds": round(time.perf_counter() - t0, 1), "uptime_before": uptime_before,
            "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "fast": {"cpu_seconds": round(cpu, 2), "docs_per_s_per_core": round(docs / cpu)},
            "fallbacks": sum(r["fallbacks"] for r in rows), "per_file": rows}


def _be_nice() -> None:
    os.nice(max(0, 10 - os.nice(0)))  # the machine is shared: niceness 10, not more


def verify(corpus: Path, workers: int, name: str = "quality_engine_verify") -> dict:
    """Both engines on every document of the corpus, one process per core, each process taking
    whole files (its token caches start cold, as a stage worker's do). The results file is
    rewritten after every file, so that an interrupted run still records what it checked."""
    import subprocess
    from concurrent.futures import ProcessPoolExecutor

    files = [str(f) for f in sorted((corpus / "docs").glob("*.parquet"))]
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    rows: list[dict] = []
    res: dict = {}
    with ProcessPoolExecutor(workers, initializer=_be_nice) as pool:
        for row in pool.map(_verify_file, files):
            rows.append(row)
            res = _verify_summary(corpus, files, rows, workers, time.perf_counter() - t0, uptime_before)
            write_results(name, res)
            print(f"{row['file']}: {row['documents']} docs, {row['n_differences']} differences, "
                  f"{row['fallbacks']} fallbacks; {res['docs']:,} docs so far", flush=True)
    return res


def _verify_summary(corpus: Path, files: list[str], rows: list[dict], workers: int, wall: float,
                    uptime_before: str) -> dict:
    import subprocess

    docs = sum(r["documents"] for r in rows)
    fast_cpu = sum(r["fast_cpu_s"] for r in rows)
    dt_cpu = sum(r["datatrove_cpu_s"] for r in rows)
    falls = sum(r["fallbacks"] for r in rows)
    return {
        "corpus": corpus.name, "docs": docs, "files_checked": len(rows), "files": len(files), "workers": workers,
        "wall_seconds": round(wall, 1), "uptime_before": uptime_before,
        "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "fast": {"cpu_seconds": round(fast_cpu, 2), "docs_per_s_per_core": round(docs / fast_cpu)},
        "datatrove_classes": {"cpu_seconds": round(dt_cpu, 2), "docs_per_s_per_core": round(docs / dt_cpu)},
        "speedup_per_core": round(dt_cpu / fast_cpu, 2),
        "fallbacks": falls, "fallback_share": round(falls / docs, 5),
        "differences": sum(r["n_differences"] for r in rows),
        "first_differences": [d for r in rows for d in r["differences"]][:50],
        "per_file": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "differences"}
                     for r in rows],
    }


def score_cost(corpus: Path, limit: int) -> dict:
    """CPU seconds of the stage's taggers (the default quality config without the combined
    score) and of the combined score on top of them (reusing their language ID), same documents,
    one process. Models are loaded and the heuristic engine's token cache holds these documents'
    words before timing (a first pass over them): the steady state of a long run, where the
    taggers are at their cheapest, so the score's share is not flattered by their cold start."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.config import QualityConfig
    from tasks.quality import stage

    tables = [pq.read_table(f, columns=["id", "text"]) for f in sorted((corpus / "docs").glob("*.parquet"))]
    docs = pa.concat_tables(tables).slice(0, limit)
    docs = docs.append_column("source", pa.array(["bench"] * docs.num_rows))
    taggers = QualityConfig(enabled=True, combined={"enabled": False})
    with_score = QualityConfig(enabled=True)
    stage.tag(docs, with_score)
    t0 = time.process_time()
    tagged = stage.tag(docs, taggers)
    taggers_s = time.process_time() - t0
    texts = docs.column("text").to_pylist()
    prior = {k: v for k, v in tagged.attributes.items() if k.startswith(stage.LID)}
    t0 = time.process_time()
    stage._run_model_tagger("combined", with_score, texts, None, prior)
    score_s = time.process_time() - t0
    chars = sum(len(t) for t in texts)
    return {"docs": docs.num_rows, "mean_chars": round(chars / max(1, len(texts))), "engine": taggers.engine,
            "taggers": stage.enabled_taggers(taggers), "taggers_cpu_seconds": round(taggers_s, 3),
            "score_cpu_seconds": round(score_s, 3), "score_cost_share": round(score_s / taggers_s, 4)}


def _engine_counts(work: Path) -> dict:
    """Documents and fallbacks of the heuristic engine, from the run's quality markers."""
    from tasks.quality.stage import engine_figures

    markers = [json.loads(p.read_text()) for p in work.rglob("*.done.json") if "quality" in p.parts]
    return engine_figures([m for m in markers if m.get("stage") == "quality"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--score-only", action="store_true", help="Measure only the combined score's cost.")
    ap.add_argument("--score-docs", type=int, default=5000, help="Documents for the score's cost.")
    ap.add_argument("--verify", action="store_true",
                    help="Both engines on every document, in-process (identity, docs/s per core, fallback share).")
    ap.add_argument("--fast-only", action="store_true",
                    help="The fast engine alone, per file as --verify runs it (docs/s per core; no identity check).")
    ap.add_argument("--name", default="quality_engine_verify",
                    help="--verify's results file under bench/results (a smaller run must not replace the 200k one).")
    ap.add_argument("--corpus", type=Path, help="A corpus folder made by make_corpus.py (default: built and cached).")
    args = ap.parse_args()
    corpus = args.corpus or standard_corpus(args.docs, args.files)
    if args.fast_only:
        res = fast_only(corpus, WORKERS)
        path = write_results(args.name, res)
        print(f"fast engine alone: {res['fast']['docs_per_s_per_core']:,} docs/s per core over {res['docs']:,} "
              f"documents -> {path}")
        return
    if args.verify:
        res = verify(corpus, WORKERS, args.name)
        path = write_results(args.name, res)
        print(json.dumps({k: v for k, v in res.items() if k not in ("per_file", "first_differences")}, indent=1))
        print(f"fast {res['fast']['docs_per_s_per_core']:,} docs/s per core vs datatrove's classes "
              f"{res['datatrove_classes']['docs_per_s_per_core']:,}; fallback share {res['fallback_share']:.4f}; "
              f"{res['differences']} differences -> {path}")
        return
    cost = score_cost(corpus, args.score_docs)
    path = write_results("quality_score_cost", {"corpus_docs": args.docs, **cost})
    print(f"combined score: {cost['score_cpu_seconds']} CPU-s on top of {cost['taggers_cpu_seconds']} of the stage's taggers "
          f"for {cost['docs']:,} documents: +{cost['score_cost_share']:.1%} -> {path}", flush=True)
    if args.score_only:
        return
    docs = json.loads((corpus / "corpus.json").read_text())["docs"]
    work = scratch_dir("refinery-quality-bench-")
    servers = ensure_prefect(work / "home")

    engines = {}
    for engine in ("fast", "datatrove"):
        with PeakRSS(exclude=servers) as mem:
            run_s, run_kept, run_manifest = refinery_run(corpus, work / f"refinery-{engine}", engine)
        engines[engine] = {"seconds": round(run_s, 2), "docs_per_s": round(docs / run_s),
                           "peak_rss_mb": round(mem.peak_excluding / MB), "kept": len(run_kept),
                           "stage_seconds": run_manifest["timing"], "rules": run_manifest["quality"]["rules"],
                           "quality_docs_per_s": round(docs / run_manifest["timing"]["quality"]),
                           "engine": _engine_counts(work / f"refinery-{engine}"), "kept_ids": run_kept}
        print(f"refinery ({engine})", json.dumps({k: v for k, v in engines[engine].items() if k != "kept_ids"}),
              flush=True)
    ours_s, ours_kept = engines["fast"]["seconds"], engines["fast"].pop("kept_ids")
    ref_kept = engines["datatrove"].pop("kept_ids")
    manifest = {"timing": engines["fast"]["stage_seconds"]}
    ours = engines["fast"]
    with PeakRSS(exclude=servers) as mem:
        dt_s, dt_kept = datatrove_run(corpus, work / "datatrove")
    theirs = {"seconds": round(dt_s, 2), "docs_per_s": round(docs / dt_s), "peak_rss_mb": round(mem.peak_excluding / MB),
              "kept": len(dt_kept)}
    print("datatrove", json.dumps(theirs), flush=True)
    result = {
        "docs": docs, "files": args.files, "workers": WORKERS,
        "filters": ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"],
        "uptime": os.popen("uptime").read().strip(),
        "refinery": ours, "refinery_datatrove_engine": engines["datatrove"], "datatrove": theirs,
        "engines_same_kept_documents": ours_kept == ref_kept,
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
