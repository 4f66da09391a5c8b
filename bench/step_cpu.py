"""CPU seconds per shard of the near-dedup benchmark's map steps, in one process.

Runs what ``minhash_vs_datatrove.py``'s ``refinery run`` runs for the first ``--shards``
files of the standard corpus (ingest's read, its id check and finish with near dedup's map
fed in, near dedup's global phase, its publishing filter), as plain function calls: no
Prefect, no Ray, so that a step's cost is measured without the run's fixed costs and without
the other worker beside it. Each figure is the step's marker ``cpu_seconds``; ``steady`` is
the mean over the shards after the first (the first pays the process's imports and kernel
loads, which a run's workers pay in their warm-up).

    python bench/step_cpu.py [--docs 1000000] [--files 16] [--shards 5] [--name step_cpu_1000k]
    python bench/step_cpu.py --code /path/to/other/checkout --name ...   # the same steps, other code

For an A/B, run both sides back to back, alternating, and compare ``steady``; the outputs
are deleted when the process ends, so ``--keep DIR`` keeps them (the corpus root is
``DIR/corpus``) to compare both sides' bytes. DIR must be missing, empty, or a folder an
earlier ``--keep`` wrote (it is replaced); anything else is refused, not deleted.
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

from bench.common import scratch_dir, standard_corpus, write_results  # noqa: E402

# the file that marks a --keep folder as this script's output, which a later --keep may replace
KEEP_MARK = "step_cpu_output.txt"
NEAR = {"num_perm": 112, "bands": 14, "rows": 8, "seed": 1, "ngram": 5, "cross_release": False}


def run_steps(files: list[Path], out: Path) -> dict[str, list[float]]:
    """The steps over ``files``, each file a shard, into the corpus root ``out``."""
    from dataclasses import replace

    from flows.curate import start_or_resume, storage_spec
    from tasks import layout
    from tasks.config import PipelineConfig
    from tasks.dedup import near_steps
    from tasks.ingest import plan_shards
    from tasks.manifest import config_sha256
    from tasks.stepkit import Feed
    from tasks.steps import id_reduce_step, ingest_read_step, ingest_step

    cfg = PipelineConfig(release="bench", output=str(out), exact_dedup={"enabled": False}, near_dedup=NEAR,
                         inputs=[{"uri": str(f), "source": "bench", "columns": {"text": "text", "id": "id"}}
                                 for f in files])
    spec = storage_spec(cfg)
    storage = spec.open()
    # a fixed creation time: two runs' outputs are then comparable byte for byte
    storage.write_json(layout.run_record_path("bench"), {"release": "bench", "created": "2026-01-01T00:00:00+00:00",
                                                         "parent": None, "config_sha256": config_sha256(
                                                             cfg.public_dict())})
    ctx = start_or_resume(storage, cfg, spec)
    shards = plan_shards(ctx.config)
    ctx = replace(ctx, exact_buckets=ctx.config.exact_dedup.bucket_count(len(shards)),
                  near_partitions=ctx.config.near_dedup.partition_count(len(shards)))
    cpu: dict[str, list[float]] = {}

    def note(marker: dict) -> None:
        cpu.setdefault(marker["stage"], []).append(marker["cpu_seconds"])

    for s in shards:
        note(ingest_read_step(ctx, s))
    for b in range(ctx.exact_buckets):
        note(id_reduce_step(ctx, b))
    uris = {s.index: s.uri for s in shards}
    fed = replace(ctx, feed=Feed("ingest", "near_map", near_steps.map_outputs))
    for s in shards:
        note(ingest_step(fed, s, False, uris))
    c0 = time.process_time()
    near_steps.single_task_step(ctx, {"compacted": None, "compacted_partitions": 0, "covers": [], "segments": {}})
    cpu["near_dedup_global"] = [round(time.process_time() - c0, 3)]
    for s in shards:
        note(near_steps.filter_step(ctx, s.name, "ingest", True))
    return cpu


def keep_dir(path: Path) -> Path:
    """``--keep``'s corpus root (``path/corpus``), in ``path`` emptied first; a ``path`` that
    holds anything but this script's output is refused (a mistyped path was deleted before)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise SystemExit(f"--keep {path}: not a folder; refusing to replace it")
    if path.exists() and any(path.iterdir()):
        if not (path / KEEP_MARK).is_file():
            raise SystemExit(f"--keep {path}: a folder with other content than step_cpu.py's output "
                             f"(no {KEEP_MARK}); refusing to delete it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / KEEP_MARK).write_text("bench/step_cpu.py --keep output (corpus/): replaced by the next --keep run here\n")
    return path / "corpus"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--shards", type=int, default=5, help="files of the corpus to run (the first is warm-up)")
    ap.add_argument("--code", help="a checkout whose tasks/ and flows/ to run instead of this one's")
    ap.add_argument("--keep", help="keep the outputs in this folder (missing, empty or an earlier --keep's: "
                                   "replaced) instead of a temporary one")
    ap.add_argument("--name", default=None, help="results file stem (bench/results/<name>.json); none: print only")
    args = ap.parse_args()
    # checked first: a refused folder costs no corpus build
    out = keep_dir(Path(args.keep)) if args.keep else None
    if args.code:
        sys.path.insert(0, os.path.abspath(args.code))
    import tasks

    corpus = standard_corpus(args.docs, args.files)
    files = sorted((corpus / "docs").glob("*.parquet"))[: args.shards]
    if out is None:
        out = scratch_dir("refinery-step-cpu-") / "corpus"
    load = os.getloadavg()
    cpu = run_steps(files, out)
    steady = {k: round(sum(v[1:]) / len(v[1:]), 3) for k, v in cpu.items() if len(v) > 1}
    result = {"code": str(Path(tasks.__file__).resolve().parents[1]), "corpus": str(corpus),
              "shards": len(files), "docs_per_shard": args.docs // args.files,
              "load_avg_1_before": round(load[0], 2), "load_avg_1_after": round(os.getloadavg()[0], 2),
              "units": "CPU seconds of each step (its marker's cpu_seconds), per shard",
              "cpu_seconds": cpu, "steady": steady}
    print(json.dumps({"code": result["code"], "steady": steady, "load": [result["load_avg_1_before"],
                                                                         result["load_avg_1_after"]]}))
    if args.name:
        print(write_results(args.name, result))


if __name__ == "__main__":
    main()
