"""Memory and throughput of the full non-model pipeline at 1x, 3x and 10x input.

Each size is the standard benchmark corpus (../shared/bench/make_corpus.py) at that many
documents, curated end to end (ingest, exact dedup, near dedup, quality without the model
stages, publish) by the ``curate`` flow on local Ray, in a fresh process per size so that
peak memory is per run. Prints peak RSS of the whole process tree and docs/s per size: the
stages stream shard by shard, so peak memory should stay bounded as input grows and docs/s
stay flat.

    python bench/memory_scaling.py [--base 20000] [--factors 1 3 10] [--short]

``--short`` uses a corpus of a million short documents instead (one sentence each, made from
the standard corpus's texts), at ``--base`` = 1,000,000 and factor 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE, MB, PeakRSS, ensure_prefect, standard_corpus, write_results  # noqa: E402


def short_corpus(docs: int, files: int) -> Path:
    """``docs`` one-sentence documents cut from the standard corpus's texts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = CACHE / f"short-{docs}-{files}"
    if (out / "done").exists():
        return out
    src = standard_corpus(100_000, 16)
    sentences: list[str] = []
    for f in sorted((src / "docs").glob("*.parquet")):
        for t in pq.read_table(f, columns=["text"]).column("text").to_pylist():
            words = t.split()
            sentences += [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
            if len(sentences) >= docs:
                break
        if len(sentences) >= docs:
            break
    sentences = sentences[:docs]
    (out / "docs").mkdir(parents=True, exist_ok=True)
    per = -(-docs // files)
    for k in range(files):
        part = sentences[k * per:(k + 1) * per]
        pq.write_table(pa.table({"id": [f"s{k}-{i}" for i in range(len(part))], "text": part}),
                       out / "docs" / f"part-{k:05d}.parquet")
    (out / "done").write_text("ok")
    return out


def one_run(corpus: str, docs: int, work: str) -> None:
    """Child process: one curate run; prints a JSON line with its figures."""
    servers = ensure_prefect(Path(work) / "home")
    from flows.curate import run_curate
    from tasks.config import PipelineConfig

    cfg = PipelineConfig(release="scale", output=str(Path(work) / "corpus"),
                         inputs=[{"uri": f"{corpus}/docs", "source": "bench", "columns": {"id": "id"}}],
                         near_dedup={"cross_release": False},
                         quality={"enabled": True, "language_id": {"enabled": True, "keep": []},
                                  "gopher_repetition": {"enabled": False}, "gopher_quality": {"enabled": False},
                                  "c4_quality": {"enabled": False}, "fineweb_quality": {"enabled": True,
                                                                                        "drop": False}})
    with PeakRSS(exclude=servers) as mem:
        t0 = time.perf_counter()
        m = run_curate(cfg)
        secs = time.perf_counter() - t0
    print(json.dumps({"docs": docs, "seconds": round(secs, 1), "docs_per_s": round(docs / secs),
                      "peak_rss_mb": round(mem.peak_excluding / MB), "published": m["totals"]["documents"],
                      "stage_seconds": m["timing"]}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=int, default=20_000)
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        one_run(args.child[0], int(args.child[1]), args.child[2])
        return
    rows = []
    for factor in ([1] if args.short else args.factors):
        docs = args.base * factor
        files = max(4, min(64, docs // 6_250))  # 100k docs: the 16 files of the other benchmarks
        corpus = short_corpus(docs, files) if args.short else standard_corpus(docs, files)
        with tempfile.TemporaryDirectory() as work:
            out = subprocess.run([sys.executable, __file__, "--child", str(corpus), str(docs), work],
                                 capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not line:
                raise SystemExit(f"run at {docs:,} docs failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            row = {"factor": factor, **json.loads(line[-1])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    name = "memory_scaling_short" if args.short else "memory_scaling"
    result = {"base": args.base, "runs": rows}
    if len(rows) > 1:
        result["rss_growth"] = round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)
        result["throughput_ratio"] = round(rows[-1]["docs_per_s"] / rows[0]["docs_per_s"], 3)
    path = write_results(name, result)
    summary = ", ".join(f"{r['docs']:,} docs: {r['peak_rss_mb']} MB, {r['docs_per_s']:,} docs/s" for r in rows)
    print(f"\n{summary} -> {path}")


if __name__ == "__main__":
    main()
