"""The fixed cost of one `refinery run`, this checkout against an earlier commit, back to back.

On the shared machine wall seconds follow the other agents' load, so a change to the fixed
cost is measured as pairs run one after the other: for each round, the earlier commit (a
``git archive`` of it in a temporary folder, with its own numba cache filled by a throwaway
run first) and then this checkout, each cold (a new ``REFINERY_HOME``: the CLI starts the
Prefect server) and warm (the server up). Each run is ``bench/minhash_vs_datatrove.py``'s
``refinery run`` (near dedup on the standard corpus), with its wall seconds, CPU seconds of its
own process tree by kind of process, the Prefect server's CPU seconds, the load average
before and after, the breakdown the run left (``run_breakdown``) and, for code that writes
one, its timeline (``REFINERY_TIMELINE``, tasks/timeline.py).

    python bench/fixed_cost.py --before b60fd35 --docs 100000 --rounds 2
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
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, run_breakdown, standard_corpus, write_results  # noqa: E402
from bench.minhash_vs_datatrove import WORKERS, refinery_run  # noqa: E402
from flows.stack import Stack  # noqa: E402


def export_commit(commit: str, dest: Path) -> str:
    """The tree of ``commit`` under ``dest``; returns the full commit id."""
    full = subprocess.run(["git", "-C", str(REPO), "rev-parse", commit], capture_output=True, text=True,
                          check=True).stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", full], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return full


def one_pair(tree: Path, corpus: Path, work: Path) -> dict:
    """A cold and a warm run of the code in ``tree`` (its folder is the CLI's working directory
    too: Ray's local workers import from the driver's working directory)."""
    os.environ["PYTHONPATH"] = str(tree)
    os.chdir(tree)
    home = work / "home"
    out = {}
    try:
        for name, release in (("cold", "bench-cold"), ("warm", "bench-warm")):
            load = os.getloadavg()
            secs, mem, _, manifest, _, timeline = refinery_run(corpus, work / name, home, release)
            out[name] = {"seconds": round(secs, 2), "cpu_seconds": round(mem.cpu_seconds, 2),
                         "cpu_seconds_by_process": mem.cpu_seconds_by_kind(),
                         "prefect_server_cpu_seconds": round(mem.excluded_cpu_seconds, 2),
                         "load_avg_1_before_after": [round(load[0], 2), round(os.getloadavg()[0], 2)],
                         "documents_out": manifest["totals"]["documents"],
                         "breakdown": run_breakdown(work / name / "corpus", release, secs, WORKERS),
                         "timeline": timeline}
            print(tree.name, name, out[name]["seconds"], "s", out[name]["cpu_seconds"], "CPU s", flush=True)
    finally:
        Stack(home).down()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the earlier commit")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--name", help="results file name (default fixed_cost_<N>k); a new name keeps earlier files")
    args = ap.parse_args()
    corpus = standard_corpus(args.docs, args.files)
    tmp = Path(tempfile.mkdtemp(prefix="refinery-fixed-cost-"))
    before_tree = tmp / "before"
    before = export_commit(args.before, before_tree)
    cwd = Path.cwd()
    try:
        one_pair(before_tree, standard_corpus(1000, 2), tmp / "prime")  # fills its numba cache; not counted
        rounds = []
        for r in range(args.rounds):
            rounds.append({"before": one_pair(before_tree, corpus, tmp / f"r{r}-before"),
                           "after": one_pair(REPO, corpus, tmp / f"r{r}-after")})
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)  # two trees and every run's corpus: gigabytes
    summary = {side: {kind: {"seconds_median": median(r[side][kind]["seconds"] for r in rounds),
                             "cpu_seconds_median": median(r[side][kind]["cpu_seconds"] for r in rounds)}
                      for kind in ("cold", "warm")} for side in ("before", "after")}
    info = json.loads((corpus / "corpus.json").read_text())
    path = write_results(args.name or f"fixed_cost_{args.docs // 1000}k", {
        "before_commit": before, "corpus": {k: info[k] for k in ("docs", "files", "bytes")},
        "meaning": "rounds run back to back (before, then after, each cold then warm); compare within a round "
                   "and CPU seconds first: wall seconds follow the other agents' load",
        "summary": summary, "rounds": rounds})
    print(json.dumps(summary, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
