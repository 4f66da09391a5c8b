"""Runs of a served deployment: one Ray per `refinery serve` process against one Ray per run.

A scheduled refresh or a run started from the Prefect UI is a flow run that `refinery serve`
starts as a subprocess. With ``--ray-per-run`` each such run starts its own local Ray (GCS,
raylet, helpers) before its first shard task; by default serve starts one Ray when it starts
and every run joins it. For each mode, in alternating rounds, this starts `refinery serve` on
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
    import httpx

    params = {"config": {**config, "release": release}}
    t0 = time.monotonic()
    for attempt in range(5):  # a SQLite-backed server answers 503 while its database is locked
        resp = httpx.post(f"{_api()}/deployments/{deployment}/create_flow_run", json={"parameters": params},
                          timeout=30)
        if resp.status_code != 503 or attempt == 4:
            break
        time.sleep(0.5)
    resp.raise_for_status()
    run_id = resp.json()["id"]
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{_api()}/flow_runs/{run_id}", timeout=10).json()
        state = (run.get("state") or {}).get("type")
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            latency = time.monotonic() - t0
            if state != "COMPLETED":
                raise RuntimeError(f"flow run {run_id} ended {state}")
            return {"release": release, "latency_seconds": round(latency, 2),
                    "run_seconds": round(float(run.get("total_run_time") or 0.0), 2)}
        time.sleep(0.1)
    raise TimeoutError(f"flow run {run_id} did not finish in {timeout:.0f} s")


def serve_mode(mode: str, corpus: Path, work: Path, runs: int, round_no: int) -> dict:
    cfg_path = refinery_config(corpus, work, f"{mode}-{round_no}")
    config = {**json.loads(cfg_path.read_text()), "name": NAME}
    config["output"] = str(work / f"corpus-{mode}-{round_no}")
    cfg_path.write_text(json.dumps(config))
    config.pop("release")
    log_path = work / f"serve-{mode}-{round_no}.log"
    cmd = [REFINERY, "serve", "--config", str(cfg_path), "--cron", "0 0 1 1 *"]
    if mode == "ray_per_run":
        cmd.append("--ray-per-run")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deployment = _deployment_id(proc)
            out = [_run_once(deployment, config, f"{mode}-{round_no}-{i}") for i in range(runs)]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    shared = [ln for ln in log_path.read_text(errors="replace").splitlines() if "Ray for this serve process" in ln]
    return {"mode": mode, "round": round_no, "serve_ray": bool(shared), "runs": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="runs per serve process")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    corpus = standard_corpus(args.docs, args.files)
    work = scratch_dir("refinery-bench-serve-")
    ensure_prefect(work / "home")  # one server for both modes, up before any clock
    modes = ("ray_per_run", "serve_ray")
    records = []
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else reversed(modes):
            rec = serve_mode(mode, corpus, work, args.runs, r)
            print(json.dumps(rec), flush=True)
            records.append(rec)

    def summary(mode: str) -> dict:
        lat = [run["latency_seconds"] for rec in records if rec["mode"] == mode for run in rec["runs"]]
        own = [run["run_seconds"] for rec in records if rec["mode"] == mode for run in rec["runs"]]
        return {"median_latency_seconds": round(median(lat), 2), "median_run_seconds": round(median(own), 2),
                "runs": len(lat), "docs_per_s_at_median_latency": round(args.docs / median(lat))}

    result = {
        "meaning": "runs of the served curate deployment started through the Prefect API one after another; "
                   "latency = create call to Completed (subprocess start, imports, Ray, stages, publish); "
                   "run = the run's own start to end on the Prefect server. ray_per_run: `refinery serve "
                   "--ray-per-run` (every run starts its own local Ray); serve_ray: the default (serve starts "
                   "one Ray, every run joins it). Modes alternate by round; the Prefect server is up before "
                   "any clock.",
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
