"""Ingest + exact dedup + publish throughput, against the pyarrow floor, in one run.

The floor is the least any Parquet-to-Parquet pipeline must do: pyarrow reads every input
file and writes it back (zstd), in this process. Ours is the whole `curate` flow on the same
files: Prefect task runs on local Ray, ingest (validation, normalization, ids), the global
exact-dedup shuffle, publish with checksums and a manifest. Both see the same corpus from
../shared/bench/make_corpus.py and the same cores.

    python bench/ingest_throughput.py [--docs 10000] [--files 8]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MB, ensure_prefect, run_breakdown, scratch_dir, standard_corpus, write_results  # noqa: E402


def floor(files: list[Path], out: Path) -> float:
    import pyarrow.parquet as pq

    from tasks.storage import PARQUET_WRITE_OPTIONS

    t0 = time.perf_counter()
    for f in files:
        table = pq.read_table(f)
        sink = io.BytesIO()
        pq.write_table(table, sink, **PARQUET_WRITE_OPTIONS)
        (out / f.name).write_bytes(sink.getvalue())
    return time.perf_counter() - t0


def ours(corpus: Path, out: Path) -> tuple[float, dict]:
    from flows.curate import run_curate
    from tasks.config import PipelineConfig

    cfg = PipelineConfig(
        release="bench",
        output=str(out),
        inputs=[{"uri": str(corpus / "docs"), "source": "bench",
                 "columns": {"text": "text", "id": "id", "added": "added"}}],
        near_dedup={"enabled": False},  # on by default: this benchmark is ingest + exact dedup + publish only
    )
    t0 = time.perf_counter()
    manifest = run_curate(cfg)
    return time.perf_counter() - t0, manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=8)
    args = ap.parse_args()
    corpus = standard_corpus(args.docs, args.files)
    info = json.loads((corpus / "corpus.json").read_text())
    files = sorted((corpus / "docs").glob("*.parquet"))
    work = scratch_dir("refinery-bench-")
    ensure_prefect(work / "home")

    (work / "floor").mkdir()
    floor_s = floor(files, work / "floor")
    ours_s, manifest = ours(corpus, work / "corpus")
    docs, mb = info["docs"], info["bytes"] / 1e6
    stages = {k: v for k, v in manifest["timing"].items()}
    if "near_dedup" in stages:
        raise SystemExit(f"near dedup ran ({stages}): this benchmark must measure ingest + exact dedup + publish only")
    result = {
        "corpus": {k: info[k] for k in ("docs", "duplicates", "files", "seed", "bytes", "words")},
        "floor_pyarrow": {"seconds": round(floor_s, 2), "docs_per_s": round(docs / floor_s), "mb_per_s": round(mb / floor_s, 1)},
        "refinery": {
            "seconds": round(ours_s, 2), "docs_per_s": round(docs / ours_s), "mb_per_s": round(mb / ours_s, 1),
            "stage_seconds": stages, "ray_cpus": manifest["cluster"]["ray_cpus"],
            "published": manifest["totals"]["documents"], "exact_duplicates": manifest["dedup"]["exact"]["duplicates"],
            "breakdown": run_breakdown(work / "corpus", manifest["release"], ours_s, int(manifest["cluster"]["ray_cpus"])),
        },
        "ratio_refinery_over_floor_time": round(ours_s / floor_s, 2),
        "peak_rss_mb_driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB),  # ru_maxrss: KiB
    }
    path = write_results("ingest_throughput", result)
    print(f"corpus: {docs:,} docs, {mb:,.0f} MB, {args.files} files")
    print(f"{'':<22}{'seconds':>10}{'docs/s':>12}{'MB/s':>10}")
    print(f"{'pyarrow floor':<22}{floor_s:>10.1f}{docs / floor_s:>12,.0f}{mb / floor_s:>10.1f}")
    print(f"{'refinery (curate)':<22}{ours_s:>10.1f}{docs / ours_s:>12,.0f}{mb / ours_s:>10.1f}")
    print(f"ratio refinery/floor (time): {ours_s / floor_s:.2f}x   stages: {stages}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
