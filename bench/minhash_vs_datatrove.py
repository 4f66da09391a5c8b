"""Near-duplicate removal: Refinery's MinHash LSH stage against datatrove's MinHash pipeline.

One run, same machine, same cores, same corpus (../shared/bench/make_corpus.py: real word
statistics, near-duplicates injected at known edit rates with exact Jaccard), same shingle and
band parameters (word 5-grams, 14 bands × 8 rows, seed 1):

- datatrove: its four MinHash stages (signatures, buckets, clusters, filter) under
  LocalPipelineExecutor, reading and writing Parquet, once with its default English word
  tokenizer (spaCy) and once with a plain whitespace tokenizer (``str.split``);
- refinery: ``refinery run -c <config>`` as a user types it (ingest, near dedup, publish:
  Prefect task runs on local Ray), with exact dedup off so that both remove the same kind of
  duplicates. Timed twice: "cold" in a fresh REFINERY_HOME, so the clock includes the Prefect
  server start the CLI does, and "warm" with that server already up. The server start alone
  is also timed separately.

Every tool runs in its own process, timed by wall clock from launch to exit (imports
included), and its peak memory is sampled over its own process tree only (for refinery, with
and without the Prefect server it started). Memory in MB = 10^6 bytes.

Ratios: ``speedup_vs_datatrove_whitespace`` is like for like (both split words on whitespace,
same shingles); ``speedup_vs_datatrove_default`` is against what datatrove users get by
default (its spaCy word tokenizer), which is much slower and not the same shingles.

    python bench/minhash_vs_datatrove.py [--docs 10000] [--files 8] [--skip-default-tokenizer]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    MB,
    PeakRSS,
    package_version,
    run_breakdown,
    scratch_dir,
    standard_corpus,
    timeline_summary,
    write_results,
)
from tasks.timeline import read as read_timeline  # noqa: E402

WORKERS = os.cpu_count() or 1


def datatrove_run(corpus: Path, work: Path, tokenizer: str) -> None:
    """datatrove's four MinHash stages; writes the pipeline's own seconds to work/timing.json."""
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):
        """The cheapest possible word tokenizer: str.split."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return text.split("\n")

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1,
                           hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    files = len(list((corpus / "docs").glob("*.parquet")))
    docs = str(corpus / "docs")
    sig_step = MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)
    if tokenizer == "whitespace":
        sig_step.word_tokenizer = SplitTokenizer()
    logs = str(work / "logs")
    t0 = time.perf_counter()
    LocalPipelineExecutor([ParquetReader(docs, text_key="text", id_key="id"), sig_step],
                          tasks=files, workers=WORKERS, logging_dir=f"{logs}/1").run()
    LocalPipelineExecutor([MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                               config=config)],
                          tasks=config.num_buckets, workers=WORKERS, logging_dir=f"{logs}/2").run()
    LocalPipelineExecutor([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                               config=config)],
                          tasks=1, workers=1, logging_dir=f"{logs}/3").run()
    LocalPipelineExecutor([ParquetReader(docs, text_key="text", id_key="id"),
                           MinhashDedupFilter(input_folder=str(work / "remove")),
                           ParquetWriter(str(work / "out"))],
                          tasks=files, workers=WORKERS, logging_dir=f"{logs}/4").run()
    (work / "timing.json").write_text(json.dumps({"pipeline_seconds": time.perf_counter() - t0}))


def timed_process(cmd: list[str], env: dict[str, str], exclude=None) -> tuple[float, PeakRSS]:
    """Wall-clock seconds of one command, launch to exit, and the peak memory of its process tree.
    ``mem.cpu_seconds``: the CPU seconds (user + system) of that tree (Ray's workers and helpers,
    datatrove's pool workers; not our Prefect server), sampled with the memory: the figure a
    loaded machine inflates far less than wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    with PeakRSS(proc.pid, exclude) as mem:
        code = proc.wait()
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"{cmd[:3]} failed with exit code {code}")
    return seconds, mem


def refinery_config(corpus: Path, work: Path, release: str) -> Path:
    """The pipeline YAML the benchmark runs (JSON is YAML)."""
    cfg = {
        "release": release, "output": str(work / "corpus"),
        "inputs": [{"uri": str(corpus / "docs"), "source": "bench", "columns": {"text": "text", "id": "id"}}],
        "exact_dedup": {"enabled": False},
        "near_dedup": {"num_perm": 112, "bands": 14, "rows": 8, "seed": 1, "ngram": 5, "cross_release": False},
    }
    path = work / f"{release}.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2))
    return path


def refinery_run(corpus: Path, work: Path, home: Path,
                 release: str) -> tuple[float, PeakRSS, set[str], dict, dict, dict | None]:
    """``refinery run`` in a subprocess with REFINERY_HOME=home; the CLI starts the local stack
    there unless it already runs."""
    import pyarrow.parquet as pq

    from flows.stack import Stack
    from tasks.config import load_config
    from tasks.ingest import stable_id
    from tasks.manifest import config_sha256

    config_path = refinery_config(corpus, work, release)
    timeline = work / "timeline.jsonl"
    timeline.unlink(missing_ok=True)
    # every process of the run notes its milestones there (tasks/timeline.py)
    env = {**os.environ, "REFINERY_HOME": str(home), "REFINERY_TIMELINE": str(timeline)}
    env.pop("PREFECT_API_URL", None)
    cli = shutil.which("refinery", path=str(Path(sys.executable).parent)) or "refinery"
    stack = Stack(home)

    def server_pids() -> set[int]:
        return {rec["pid"] for rec in stack.read_state().get("services", {}).values() if "pid" in rec}

    launch = time.time()
    seconds, mem = timed_process([cli, "run", "-c", str(config_path)], env, server_pids)
    # (code from before the timeline existed writes none)
    manifest_timeline = timeline_summary(read_timeline(timeline), launch, launch + seconds) if timeline.exists() else None
    manifest = json.loads((work / "corpus" / "releases" / release / "manifest.json").read_text())
    cfg = load_config(config_path)
    if manifest.get("config_sha256") != config_sha256(cfg.public_dict()):
        raise SystemExit(f"{config_path}: the manifest of release {release} was made from another config")
    kept_ids = set()
    for f in manifest["outputs"]["documents"]:
        kept_ids |= set(pq.read_table(work / "corpus" / f["path"], columns=["id"]).column("id").to_pylist())
    source_ids = set()
    for f in sorted((corpus / "docs").glob("*.parquet")):
        source_ids |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    kept = {sid for sid in source_ids if stable_id("bench", sid, "") in kept_ids}
    nd = cfg.near_dedup
    params = {"ngram": nd.ngram, "bands": nd.bands, "rows": nd.rows, "num_perm": nd.num_perm, "seed": nd.seed,
              "shingle": nd.shingle, "normalization": nd.normalization, "hash_function": nd.hash_function,
              "exact_dedup": cfg.exact_dedup.enabled, "config_sha256": manifest["config_sha256"]}
    return seconds, mem, kept, manifest, params, manifest_timeline


def datatrove_process(corpus: Path, work: Path, tokenizer: str) -> tuple[float, PeakRSS, set[str], float]:
    """datatrove's pipeline in a child process (this script with --datatrove-worker)."""
    import pyarrow.parquet as pq

    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--datatrove-worker", tokenizer, "--corpus", str(corpus), "--work", str(work)]
    seconds, mem = timed_process(cmd, dict(os.environ))
    inner = json.loads((work / "timing.json").read_text())["pipeline_seconds"]
    kept = set()
    for f in (work / "out").rglob("*.parquet"):
        kept |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return seconds, mem, kept, inner


def server_start_seconds(home: Path) -> tuple[float, float]:
    """How long the local Prefect server takes to come up, alone, on this machine: wall
    seconds, and the CPU seconds of its process tree until it answered (the figure that
    does not grow with the other agents' load)."""
    import psutil

    from flows.stack import Stack, free_port

    stack = Stack(home)
    t0 = time.perf_counter()
    stack.up(prefect_port=free_port(), with_s3=False)
    seconds = time.perf_counter() - t0
    server = psutil.Process(stack.read_state()["services"]["prefect"]["pid"])
    cpu = sum(t.user + t.system for t in (p.cpu_times() for p in (server, *server.children(recursive=True))))
    stack.down()
    return seconds, cpu


def quality(all_ids: set[str], kept: set[str], truth) -> dict:
    """Recall: injected duplicate pairs (by Jaccard band) of which at least one side was
    removed. Precision: removed documents that belong to an injected pair."""
    removed = all_ids - kept
    in_pair = set(truth["dup_id"]) | set(truth["parent_id"])
    out = {"removed": len(removed),
           "precision": round(len(removed & in_pair) / len(removed), 4) if removed else 1.0}
    for name, lo in (("recall_all", 0.0), ("recall_j_ge_0_8", 0.8), ("recall_j_ge_0_9", 0.9)):
        pairs = [(d, p) for d, p, j in zip(truth["dup_id"], truth["parent_id"], truth["jaccard"], strict=True)
                 if j >= lo]
        hit = sum(1 for d, p in pairs if d in removed or p in removed)
        out[name] = round(hit / len(pairs), 4) if pairs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--skip-default-tokenizer", action="store_true", help="only datatrove's whitespace variant")
    ap.add_argument("--skip-datatrove", action="store_true",
                    help="only refinery's runs (an A/B of our side; the file then has no ratios)")
    ap.add_argument("--name", help="results file name (default minhash_vs_datatrove_<N>k), so that an A/B run "
                                   "does not overwrite the official figures")
    ap.add_argument("--datatrove-worker", choices=["whitespace", "default"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.skip_datatrove and args.name is None:
        ap.error("--skip-datatrove needs --name: a file without datatrove's runs must not replace the official one")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        ap.error(f"--name {args.name!r}: a file name in bench/results (letters, digits, _ . -), no folders")
    if args.datatrove_worker:
        datatrove_run(args.corpus, args.work, args.datatrove_worker)
        return
    corpus = standard_corpus(args.docs, args.files)
    import pyarrow.parquet as pq

    info = json.loads((corpus / "corpus.json").read_text())
    truth = pq.read_table(corpus / "truth.parquet").to_pydict()
    all_ids = set()
    for f in sorted((corpus / "docs").glob("*.parquet")):
        all_ids |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    work = scratch_dir("refinery-minhash-bench-")
    docs = info["docs"]
    results: dict[str, dict] = {}
    home = work / "home"
    from flows.stack import Stack

    try:
        for name, release in (("refinery_cold", "bench-cold"), ("refinery_warm", "bench-warm")):
            secs, mem, kept, manifest, params, timeline = refinery_run(corpus, work / name, home, release)
            results[name] = {"seconds": round(secs, 2), "docs_per_s": round(docs / secs),
                             "cpu_seconds": round(mem.cpu_seconds, 2),
                             # main = the CLI (driver); Ray's workers; Ray's helpers (GCS, raylet,
                             # dashboard, agents, log monitor, autoscaler monitor)
                             "cpu_seconds_by_process": mem.cpu_seconds_by_kind(),
                             "docs_per_cpu_second": round(docs / mem.cpu_seconds) if mem.cpu_seconds else None,
                             "peak_rss_mb": round(mem.peak_excluding / MB),
                             "peak_rss_mb_with_prefect_server": round(mem.peak / MB),
                             # its start (cold) and its serving of the run's API calls
                             "prefect_server_cpu_seconds": round(mem.excluded_cpu_seconds, 2),
                             "stage_seconds": manifest["timing"], **quality(all_ids, kept, truth),
                             "breakdown": {**run_breakdown(work / name / "corpus", release, secs, WORKERS),
                                           "timeline": timeline}}
            print(name, json.dumps(results[name]), flush=True)
    finally:
        Stack(home).down()
    server_s, server_cpu = server_start_seconds(work / "home-server-only")

    variants = [] if args.skip_datatrove else ["whitespace"] if args.skip_default_tokenizer else ["whitespace",
                                                                                                   "default"]
    for tok in variants:
        secs, mem, kept, inner = datatrove_process(corpus, work / f"datatrove-{tok}", tok)
        results[f"datatrove_{tok}"] = {"seconds": round(secs, 2), "docs_per_s": round(docs / secs),
                                       "cpu_seconds": round(mem.cpu_seconds, 2),
                                       "docs_per_cpu_second": round(docs / mem.cpu_seconds) if mem.cpu_seconds
                                       else None,
                                       "pipeline_seconds": round(inner, 2), "peak_rss_mb": round(mem.peak / MB),
                                       **quality(all_ids, kept, truth)}
        print(f"datatrove_{tok}", json.dumps(results[f"datatrove_{tok}"]), flush=True)

    ours = results["refinery_cold"]["seconds"]
    warm = results["refinery_warm"]["seconds"]
    ratios = {}
    for k, v in results.items():
        if k.startswith("datatrove"):
            ratios[f"speedup_vs_{k}"] = round(v["seconds"] / ours, 2)
            ratios[f"speedup_warm_vs_{k}"] = round(v["seconds"] / warm, 2)
    out = {"corpus": {k: info[k] for k in ("docs", "duplicates", "files", "seed", "bytes", "words")},
           "parameters": {**params, "workers": WORKERS},
           "peers": {"datatrove": package_version("datatrove"), "spacy": package_version("spacy")},
           "prefect_server_start_seconds": round(server_s, 2),
           "prefect_server_start_cpu_seconds": round(server_cpu, 2),
           "ratio_meaning": {
               "speedup_vs_datatrove_whitespace": "like for like: datatrove with a str.split word tokenizer, "
                                                  "refinery cold (clock includes the Prefect server start)",
               "speedup_vs_datatrove_default": "what datatrove users get by default (its spaCy word tokenizer), "
                                               "refinery cold",
               "speedup_warm_vs_*": "the same with refinery's Prefect server already running"},
           "results": results, **ratios}
    # one results file per corpus size, so that the figures of each size stand side by side
    path = write_results(args.name or f"minhash_vs_datatrove_{docs // 1000}k", out)
    print(f"\ncorpus: {docs:,} docs ({info['duplicates']:,} injected near-duplicates), {WORKERS} workers; "
          f"Prefect server start alone: {server_s:.1f} s ({server_cpu:.1f} CPU s)")
    print(f"{'':<24}{'seconds':>9}{'docs/s':>10}{'CPU s':>8}{'peak MB':>9}{'recall':>8}{'R@J>=.8':>9}{'precision':>10}")
    for k, v in results.items():
        print(f"{k:<24}{v['seconds']:>9.1f}{v['docs_per_s']:>10,}{v['cpu_seconds']:>8.1f}{v['peak_rss_mb']:>9,}"
              f"{v['recall_all']:>8.3f}"
              f"{v['recall_j_ge_0_8']:>9.3f}{v['precision']:>10.3f}")
    for k, v in ratios.items():
        print(f"{k}: {v}x")
    print(f"results: {path}")
    if args.name is None:
        from bench.scaling_plot import main as draw_scaling

        draw_scaling()  # the picture follows every results file it draws from


if __name__ == "__main__":
    main()
