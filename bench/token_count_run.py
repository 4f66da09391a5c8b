"""What counting tokens adds to the ingest stage of a real run, as a user sees it.

The ``curate`` flow (Prefect task runs on local Ray, every CPU of the machine) with
``stages: [ingest]`` on the standard corpus (../shared/bench/make_corpus.py), so ingest is the
last map step and publishing (with the token counts of the default tokenizer, the bundled
Gemma 3) is fused into it. Each variant runs in its own process with its own Ray, so its
workers start cold:

- ``off``: ``tokenizer: {enabled: false}``;
- ``first``: counting on, a tokenizer cache holding only the converted tokenizer and what is
  derived from it once (a machine's first run: every worker counts the pieces of its first
  shards);
- ``later``: counting on again, the cache now holding the piece counts the first run saved.

The figure is the ingest steps' CPU time (``cpu_seconds`` of each step's marker: the Ray
worker's process time for the step) summed over shards; ``added_share`` = (on - off) / off
(target: at most 0.15). The corpus has an id column, so the stage checks ids across shards in
three steps (``ingest_read``, ``ingest_ids``, ``ingest``); ``cpu_seconds`` is the last one's
(as recorded before), ``stage_cpu_seconds`` all three's, with ``added_share_stage``. Wall seconds are recorded too; the machine is shared (load average in
the results).

    python bench/token_count_run.py [--docs 100000] [--files 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ensure_prefect, standard_corpus, write_results  # noqa: E402


def one_run(corpus: Path, out: Path, tokens_on: bool) -> dict:
    """Run the flow once in this process; the ingest steps' summed CPU and wall seconds."""
    from flows.curate import run_curate
    from tasks.config import PipelineConfig

    cfg = PipelineConfig(
        release="bench", output=str(out), stages=["ingest"], tokenizer={"enabled": tokens_on},
        inputs=[{"uri": str(corpus / "docs"), "source": "bench", "columns": {"text": "text", "id": "id", "added": "added"}}],
    )
    manifest = run_curate(cfg)
    markers = [json.loads(p.read_text()) for p in out.glob("state/work/**/*.done.json")]
    ingest = [m for m in markers if m.get("stage") == "ingest"]
    if not ingest or any("cpu_seconds" not in m for m in ingest):
        raise SystemExit(f"{out}: no ingest step markers with cpu_seconds (found {len(markers)} markers)")
    # the whole stage: with source ids checked across shards (the standard corpus has an id
    # column), ingest is three steps: read every shard, check the ids, finish; cpu_seconds (the
    # older rows' figure) is the last of them only
    stage = [m for m in markers if m.get("stage") in ("ingest_read", "ingest_ids", "ingest")]
    return {"cpu_seconds": round(sum(m["cpu_seconds"] for m in ingest), 2),
            "stage_cpu_seconds": round(sum(m.get("cpu_seconds", 0) for m in stage), 2),
            "stage_steps": len(stage),
            "step_seconds": round(sum(m["seconds"] for m in ingest), 2), "steps": len(ingest),
            "stage_seconds": manifest["timing"].get("ingest"), "published": manifest["totals"]["documents"],
            "tokenizer": manifest.get("tokenizer") or manifest["totals"].get("tokenizer"),
            "model_tokens": manifest["totals"].get("model_tokens")}


def waits_before_steps(path: Path) -> dict:
    """From a run's timeline: the task runs whose step started more than 0.5 s after the task
    run entered the worker (Prefect's engine before the step: task run, state, concurrency
    slots), how many and their seconds summed (all of them: ``total_seconds``)."""
    from tasks.timeline import read

    entered: dict[int, float] = {}
    waits = []
    for e in read(path):
        if e["event"] == "task_enter":
            entered[e["pid"]] = e["t"]
        elif e["event"] == "step_start" and e["pid"] in entered:
            waits.append(e["t"] - entered.pop(e["pid"]))
    long = [w for w in waits if w > 0.5]
    return {"over_half_second": len(long), "over_half_second_seconds": round(sum(long), 2),
            "task_runs": len(waits), "total_seconds": round(sum(waits), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--variant", choices=["off", "on"], help=argparse.SUPPRESS)  # one run, in a child process
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--name", default="token_count_run", help="the results file's name (bench/results/<name>.json)")
    ap.add_argument("--timeline", help="a folder: each run records its timeline there (tasks/timeline.py), "
                    "<variant>.jsonl, and the results carry the stage's wall clock broken down")
    args = ap.parse_args()
    corpus = standard_corpus(args.docs, args.files)
    if args.variant:
        print("RESULT " + json.dumps(one_run(corpus, Path(args.out), args.variant == "on")), flush=True)
        return

    work = Path(tempfile.mkdtemp(prefix="refinery-tokrun-"))
    import atexit

    atexit.register(shutil.rmtree, work, True)  # registered first, so it runs after the server is stopped
    ensure_prefect(work / "home")  # one server for the three runs (children inherit PREFECT_API_URL)
    from tasks import tokens

    # a tokenizer cache holding only the converted tokenizer: convert (or find) it in the
    # default cache, then link it into a fresh one
    tokens.load_tokenizer().count(__import__("pyarrow").array(["warm the conversion"]))
    real = Path(tokens._cache_dir())
    cache = work / "tokenizers"
    cache.mkdir()
    for f in real.iterdir():
        if f.name.endswith((".json", f".{tokens.BPE_SCHEME}.npz")) and ".tmp-" not in f.name:
            os.symlink(f, cache / f.name)
    env = {**os.environ, "REFINERY_TOKENIZER_CACHE": str(cache)}

    runs = {}
    for name, variant in [("off", "off"), ("first", "on"), ("later", "on")]:
        out = work / name
        run_env = dict(env)
        if args.timeline:
            Path(args.timeline).mkdir(parents=True, exist_ok=True)
            line_file = Path(args.timeline) / f"{name}.jsonl"
            line_file.unlink(missing_ok=True)
            run_env["REFINERY_TIMELINE"] = str(line_file)
        proc = subprocess.run([sys.executable, __file__, "--docs", str(args.docs), "--files", str(args.files),
                               "--variant", variant, "--out", str(out)], env=run_env, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            raise SystemExit(f"run {name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        runs[name] = json.loads(line[0][len("RESULT "):])
        if args.timeline:
            runs[name]["waits_before_steps"] = waits_before_steps(Path(args.timeline) / f"{name}.jsonl")
        shutil.rmtree(out, ignore_errors=True)
        print(name, runs[name], flush=True)
    off = runs["off"]["cpu_seconds"]
    for name in ("first", "later"):
        runs[name]["added_share"] = round((runs[name]["cpu_seconds"] - off) / off, 3)
        stage_off = runs["off"]["stage_cpu_seconds"]
        runs[name]["added_share_stage"] = round((runs[name]["stage_cpu_seconds"] - stage_off) / stage_off, 3)
        runs[name]["added_share_wall"] = round((runs[name]["step_seconds"] - runs["off"]["step_seconds"])
                                               / runs["off"]["step_seconds"], 3)
    info = json.loads((corpus / "corpus.json").read_text())
    out = {"corpus": {"docs": info["docs"], "bytes": info["bytes"], "files": args.files},
           "runs": runs, "target_added_share": 0.15,
           "note": "cpu_seconds: the ingest steps' worker process time summed over shards (Ray workers, all CPUs); "
                   "stage_cpu_seconds: the same over all of the ingest stage's steps (ingest_read, ingest_ids, "
                   "ingest: ids are checked across shards); added_share = (on - off) / off (added_share_stage: "
                   "of the stage's). first: the tokenizer cache holds the conversion only; later: "
                   "it also holds the piece counts the first run saved."}
    path = write_results(args.name, out)
    print(path.read_text())


if __name__ == "__main__":
    main()
