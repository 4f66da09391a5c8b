"""Runs of a served deployment: one Ray per `refinery serve` process against one Ray per run.

A scheduled refresh or a run started from the Prefect UI is a flow run that `refinery serve`
starts as a subprocess. By default each such run starts its own local Ray (GCS, raylet,
helpers) before its first shard task; with ``--shared-ray`` serve starts one Ray when it starts
and every run joins it, at the cost of that Ray's idle CPU (measured too). For each mode, in alternating rounds, this starts `refinery serve` on
the standard corpus's near-dedup pipeline (bench/minhash_vs_datatrove.py's parameters; one
Prefect server for both modes, started before the clock), waits until its deployments are
registered and its Ray (if any) is up, then starts ``--runs`` runs of `curate/<name>` one after
another through the Prefect API, each with a new release id, and records per run:

- ``latency_seconds``: from the API call that creates the run until the server shows it
  Completed (what a user who clicks "Run" waits for: the subprocess start, imports, Ray, stages);
- ``run_seconds``: the run's own start to end as the Prefect server records it.

    python bench/serve_runs.py --docs 100000 --files 16 --rounds 2 --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ensure_prefect, scratch_dir, standard_corpus, write_results  # noqa: E402
from bench.minhash_vs_datatrove import refinery_config  # noqa: E402

REFINERY = str(Path(sys.executable).with_name("refinery"))
NAME = "bench-serve"


def _api() -> str:
    return os.environ["PREFECT_API_URL"].rstrip("/")


def _deployment_id(proc: subprocess.Popen, timeout: float = 300) -> str:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("refinery serve exited")
        resp = httpx.get(f"{_api()}/deployments/name/curate/{NAME}", timeout=10)
        if resp.status_code == 200:
            return resp.json()["id"]
        time.sleep(0.5)
    raise TimeoutError("the curate deployment was not registered")


def _run_once(deployment: str, config: dict, release: str, timeout: float = 1800) -> dict:
    # Prefect's own client: it retries the 503 a SQLite-backed server answers when a write
    # met another writer's commit, as every Refinery call to the server does
    from prefect.client.base import PrefectHttpxSyncClient

    params = {"config": {**config, "release": release}}
    t0 = time.monotonic()
    with PrefectHttpxSyncClient(timeout=30) as client:
        run_id = client.post(f"{_api()}/deployments/{deployment}/create_flow_run",
                             json={"parameters": params}).json()["id"]
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            run = client.get(f"{_api()}/flow_runs/{run_id}").json()
            state = (run.get("state") or {}).get("type")
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                latency = time.monotonic() - t0
                if state != "COMPLETED":
                    raise RuntimeError(f"flow run {run_id} ended {state}")
                return {"release": release, "latency_seconds": round(latency, 2),
                        "run_seconds": round(float(run.get("total_run_time") or 0.0), 2)}
            time.sleep(0.1)
    raise TimeoutError(f"flow run {run_id} did not finish in {timeout:.0f} s")


def serve_mode(mode: str, corpus: Path, work: Path, runs: int, round_no: int, idle_seconds: float = 30.0) -> dict:
    cfg_path = refinery_config(corpus, work, f"{mode}-{round_no}")
    config = {**json.loads(cfg_path.read_text()), "name": NAME}
    config["output"] = str(work / f"corpus-{mode}-{round_no}")
    cfg_path.write_text(json.dumps(config))
    config.pop("release")
    log_path = work / f"serve-{mode}-{round_no}.log"
    cmd = [REFINERY, "serve", "--config", str(cfg_path), "--cron", "0 0 1 1 *"]
    if mode == "serve_ray":
        cmd.append("--shared-ray")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deployment = _deployment_id(proc)
            idle = _idle_cpu(proc.pid, idle_seconds)
            out = [_run_once(deployment, config, f"{mode}-{round_no}-{i}") for i in range(runs)]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    shared = [ln for ln in log_path.read_text(errors="replace").splitlines() if "Ray for this serve process" in ln]
    return {"mode": mode, "round": round_no, "serve_ray": bool(shared), "idle": idle, "runs": out}


def _tree_cpu(pid: int) -> float:
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _idle_cpu(pid: int, seconds: float, settle: float = 20.0) -> dict:
    """CPU seconds the serve process and everything it started used while waiting for work,
    from ``settle`` seconds after its deployments were registered, as CPU-s per minute."""
    import psutil

    time.sleep(settle)  # the runner's and Ray's start-up (helpers, prestarted workers) is not idle time
    before, t0 = _tree_cpu(pid), time.monotonic()
    time.sleep(seconds)
    used, wall = _tree_cpu(pid) - before, time.monotonic() - t0
    rss = 0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            rss += proc.memory_info().rss
    return {"seconds": round(wall, 1), "cpu_seconds": round(used, 2),
            "cpu_seconds_per_minute": round(60 * used / wall, 2), "rss_mb": round(rss / 1e6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="runs per serve process")
    ap.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU measured over this long per serve")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    corpus = standard_corpus(args.docs, args.files)
    work = scratch_dir("refinery-bench-serve-")
    ensure_prefect(work / "home")  # one server for both modes, up before any clock
    modes = ("ray_per_run", "serve_ray")
    records = []
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else reversed(modes):
            rec = serve_mode(mode, corpus, work, args.runs, r, args.idle_seconds)
            print(json.dumps(rec), flush=True)
            records.append(rec)

    def summary(mode: str) -> dict:
        lat = [run["latency_seconds"] for rec in records if rec["mode"] == mode for run in rec["runs"]]
        own = [run["run_seconds"] for rec in records if rec["mode"] == mode for run in rec["runs"]]
        idle = [rec["idle"]["cpu_seconds_per_minute"] for rec in records if rec["mode"] == mode]
        firsts = [rec["runs"][0]["latency_seconds"] for rec in records if rec["mode"] == mode]
        return {"median_latency_seconds": round(median(lat), 2), "median_run_seconds": round(median(own), 2),
                "median_first_run_latency_seconds": round(median(firsts), 2), "runs": len(lat),
                "idle_cpu_seconds_per_minute": round(median(idle), 2)}

    result = {
        "meaning": "runs of the served curate deployment started through the Prefect API one after another; "
                   "latency = create call to Completed (the runner's poll, 2 s by default, subprocess start, "
                   "imports, Ray, stages, publish); run = the run's own start to end on the Prefect server. "
                   "ray_per_run: `refinery serve` (the default: every run starts its own local Ray); serve_ray: "
                   "`refinery serve --shared-ray` (serve starts one Ray, every run joins it). idle = CPU of the "
                   "serve process and all it started while it waited for work, before the runs. Modes alternate "
                   "by round; the Prefect server is up before any clock.",
        "corpus": {"docs": args.docs, "files": args.files},
        "parameters": json.loads(refinery_config(corpus, work, "params").read_text())["near_dedup"],
        "summary": {m: summary(m) for m in modes},
        "records": records,
    }
    s = result["summary"]
    result["latency_saved_seconds"] = round(s["ray_per_run"]["median_latency_seconds"]
                                           - s["serve_ray"]["median_latency_seconds"], 2)
    path = write_results(args.name or f"serve_runs_{args.docs // 1000}k", result)
    print(json.dumps(result["summary"], indent=2), f"saved {result['latency_saved_seconds']} s per run", path)


if __name__ == "__main__":
    main()
