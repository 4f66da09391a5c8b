"""Where the CPU of counting tokens goes in the ingest stage, phase by phase, repeated.

Two worker processes side by side (as the ``curate`` flow's two Ray workers on this machine),
each taking every other shard of the standard corpus (16 shards, 100,000 documents): each
ingests a shard with ``tasks.ingest.ingest_shard`` (its compiled kernels loaded before the
clock, as a warmed worker has them) and counts the published texts' tokens with the default
tokenizer, as the ingest step does when it is the release's last map step. Per worker, the
process time (``time.process_time``) of every phase, exclusive of the phases inside it:

- ``load``: the tokenizer object (reading the saved piece parts into the table) and
  ``load_walk`` (numba's cached walk), in the worker's warm-up;
- ``walk``: the compiled walk over known pieces (no learning);
- ``learn``: the compiled walk that counts new pieces (walk and BPE of the new ones);
- ``bpe_load``: loading the compiled counter (first miss only);
- ``take_saved``: reading other workers' parts into the table;
- ``save``: writing this worker's new pieces as parts;
- ``count_other``: the rest of ``Tokenizer.count`` (buffers, slicing, BOS);
- ``ingest``: ``ingest_shard`` itself (the stage's own work, for the share).

Cases: ``first`` (a tokenizer cache holding the conversion only: a machine's first run) and
``later`` (the cache holding the parts a first run saved). Each case runs ``--repeat`` times
(a fresh cache each time for ``first``); the headline is the minimum over repeats of the two
workers' summed CPU per phase, which depends less on the neighbours' load than one run does.

    python bench/token_count_profile.py [--repeat 5] [--cases first,later]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import standard_corpus, write_results  # noqa: E402

PHASES = ("load", "walk", "learn", "bpe_load", "take_saved", "save", "count_other", "ingest")


class _Clock:
    """Exclusive process time per phase: a phase inside another is not counted twice."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(PHASES, 0.0)
        self._stack: list[list] = []

    def wrap(self, phase: str, fn):
        def timed(*args, **kwargs):
            return self.run(phase, fn, *args, **kwargs)
        return timed

    def run(self, phase: str, fn, *args, **kwargs):
        frame = [phase, time.process_time(), 0.0]
        self._stack.append(frame)
        try:
            return fn(*args, **kwargs)
        finally:
            self._stack.pop()
            took = time.process_time() - frame[1]
            self.spent[phase] += took - frame[2]
            if self._stack:
                self._stack[-1][2] += took


def worker(corpus: Path, index: int, workers: int, case: str) -> dict:
    """One worker's shards: ingest (``off``: no tokens; ``separate``: then count the tokens in a
    pass of their own, as before ingest counted them in its word-count pass; otherwise fused,
    as the ingest step does when it is the last map step); the phases' CPU seconds."""
    from datetime import UTC, datetime

    import numpy as np

    from tasks import token_kernels, tokens
    from tasks.config import PipelineConfig
    from tasks.ingest import ingest_shard, plan_shards

    cfg = PipelineConfig(release="bench", output=tempfile.mkdtemp(prefix="refinery-tokprof-"),
                         inputs=[{"uri": str(corpus / "docs"), "source": "bench",
                                  "columns": {"text": "text", "id": "id", "added": "added"}}])
    shards = plan_shards(cfg)[index::workers]
    now = datetime.now(UTC)
    fused = cfg.tokenizer if case in ("first", "later") else None
    ingest_shard(shards[0], cfg.ingest, cfg.exact_dedup.key, "bench", now)  # kernels loaded, as after warm-up
    clock = _Clock()
    real_walk = token_kernels.count_texts

    def walk(*args):
        return clock.run("learn" if args[12] else "walk", real_walk, *args)  # args[12]: learn

    token_kernels.count_texts = walk
    seg = tokens._SegmentedTokenizer
    for name, phase in (("_take_saved", "take_saved"), ("_save_new", "save"), ("_write_part", "save")):
        setattr(seg, name, clock.wrap(phase, getattr(seg, name)))
    bpe_prop = seg.bpe
    seg.bpe = property(lambda self: clock.run("bpe_load", bpe_prop.fget, self) if not self._bpe_loaded
                       else bpe_prop.fget(self))
    written = [0]
    real_write = seg._write_part

    def write(self, keys, vals):
        written[0] += len(keys)
        return real_write(self, keys, vals)

    seg._write_part = write

    tok = None
    if case != "off":
        tok = clock.run("load", tokens.load_tokenizer)
        clock.run("load", tok.load_walk)
    start_pieces = tok._stored if tok is not None else 0
    total = 0
    for shard in shards:
        res = clock.run("ingest", ingest_shard, shard, cfg.ingest, cfg.exact_dedup.key, "bench", now, fused)
        if case == "separate_first" or case == "separate_later":
            total += int(np.sum(clock.run("count_other", tok.count, res.work.column("text"))))
        elif fused is not None:
            total += int(np.sum(res.model_tokens))
    shutil.rmtree(cfg.output, ignore_errors=True)
    return {"cpu": {k: round(v, 4) for k, v in clock.spent.items()}, "tokens": total, "shards": len(shards),
            "pieces_at_start": int(start_pieces), "pieces_written": written[0],
            "pieces_at_end": int(tok._stored) if tok is not None else 0}


def fresh_cache(work: Path, name: str, parts_from: Path | None) -> Path:
    """A tokenizer cache holding the conversion (linked from the real one) and, for a later
    run, a copy of the parts a first run saved."""
    from tasks import tokens

    real = Path(tokens._cache_dir())
    cache = work / name
    cache.mkdir()
    for f in real.iterdir():
        if f.name.endswith((".json", f".{tokens.BPE_SCHEME}.npz")) and ".tmp-" not in f.name:
            os.symlink(f, cache / f.name)
    if parts_from is not None:
        for d in parts_from.iterdir():
            if d.is_dir() and f".{tokens.PIECES_SCHEME}-" in d.name:
                shutil.copytree(d, cache / d.name)
    return cache


def side_by_side(corpus: Path, cache: Path, workers: int, case: str) -> list[dict]:
    env = {**os.environ, "REFINERY_TOKENIZER_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(i), "--workers", str(workers),
                               "--corpus", str(corpus), "--case", case], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(workers)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        line = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not line:
            raise SystemExit(f"worker failed ({p.returncode}): {stderr[-2000:]}")
        out.append(json.loads(line[0][len("RESULT "):]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cases", default="off,first,later")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="token_count_profile")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print("RESULT " + json.dumps(worker(Path(args.corpus), args.worker, args.workers, args.case)), flush=True)
        return
    corpus = standard_corpus(args.docs, args.files)
    import pyarrow as pa

    from tasks import tokens

    tokens.load_tokenizer().count(pa.array(["warm the conversion"]))  # converted once per machine
    cases = args.cases.split(",")
    work = Path(tempfile.mkdtemp(prefix="refinery-tokprof-"))
    runs: dict[str, list] = {c: [] for c in cases}
    load = []
    try:
        seed = fresh_cache(work, "seed", None)  # the parts a first run leaves, for the later runs
        side_by_side(corpus, seed, args.workers, "first")
        for r in range(args.repeat):
            for case in cases:  # interleaved, so that both cases meet the same load
                cache = fresh_cache(work, f"{case}-{r}", seed if case.endswith("later") else None)
                load.append(os.getloadavg()[0])
                ws = side_by_side(corpus, cache, args.workers, case)
                summed = {k: round(sum(w["cpu"][k] for w in ws), 4) for k in PHASES}
                # the load is in the worker's warm-up, outside the step's clock (as in a real run)
                summed["step"] = round(sum(v for k, v in summed.items() if k != "load"), 4)
                runs[case].append({"sum": summed, "workers": ws})
                print(case, r, summed, [(w["pieces_at_start"], w["pieces_written"]) for w in ws], flush=True)
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out: dict = {"corpus": {"docs": args.docs, "files": args.files}, "workers": args.workers,
                 "repeat": args.repeat, "load_avg_1m_per_run": [round(x, 2) for x in load], "cases": {}}
    for case, rs in runs.items():
        best = {k: min(r["sum"][k] for r in rs) for k in [*PHASES, "step"]}
        median = {k: sorted(r["sum"][k] for r in rs)[len(rs) // 2] for k in [*PHASES, "step"]}
        out["cases"][case] = {"min": best, "median": median, "tokens": sum(w["tokens"] for w in rs[0]["workers"]),
                              "pieces_written": [sum(w["pieces_written"] for w in r["workers"]) for r in rs],
                              "runs": [r["sum"] for r in rs]}
    if "off" in runs:
        for c in out["cases"].values():
            for how in ("min", "median"):  # what counting adds to the step's CPU, against the same without it
                c[f"added_share_{how}"] = round(c[how]["step"] / out["cases"]["off"][how]["step"] - 1, 3)
    out["note"] = ("CPU seconds (process time) summed over the two side-by-side workers, exclusive per phase "
                   "(ingest: ingest_shard less the token walk inside it); step: every phase but load (the "
                   "worker's warm-up); min and median over repeats; added_share = step / off's step - 1 "
                   "(target 0.15). separate_*: tokens counted in a pass of their own after ingest_shard.")
    path = write_results(args.name, out)
    print(path.read_text())


if __name__ == "__main__":
    main()
