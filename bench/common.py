"""What every benchmark shares: the standard corpus, the local stack, the results file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MAKE_CORPUS = REPO.parent / "shared" / "bench" / "make_corpus.py"
CACHE = Path(os.environ.get("REFINERY_BENCH_CACHE", Path.home() / ".cache" / "refinery-bench"))
RESULTS = REPO / "bench" / "results"


def standard_corpus(docs: int, files: int, seed: int = 7) -> Path:
    """The shared benchmark corpus (../shared/bench/make_corpus.py), built once per parameters."""
    out = CACHE / f"corpus-{docs}-{files}-{seed}"
    if not (out / "corpus.json").exists():
        if not MAKE_CORPUS.exists():
            raise FileNotFoundError(f"{MAKE_CORPUS} is missing: benchmarks need ../shared beside the checkout")
        print(f"building the standard corpus ({docs:,} docs) into {out} ...", flush=True)
        subprocess.run([sys.executable, str(MAKE_CORPUS), str(out), "--docs", str(docs), "--files", str(files),
                        "--seed", str(seed)], check=True)
    return out


def ensure_prefect(home: Path):
    """Point this process at a Prefect server: PREFECT_API_URL if set, else a local stack
    under ``home`` (started here). Must run before Prefect is imported. Returns a function
    giving the pids of the server started here (none for an external one), for
    ``PeakRSS(exclude=...)``: a tool's memory must not include our server."""
    if os.environ.get("PREFECT_API_URL"):
        return lambda: set()
    import atexit

    from flows.stack import Stack, free_port

    stack = Stack(home)
    stack.up(prefect_port=free_port(), with_s3=False)
    atexit.register(stack.down)  # the benchmark's server goes with it
    os.environ.update(stack.environment())
    return lambda: {rec["pid"] for rec in stack.read_state().get("services", {}).values() if "pid" in rec}


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    # the load average says whether the machine was shared while the figures were taken
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_avg_1_5_15": [round(x, 2) for x in load] if load else None}


def commit() -> str:
    """The checkout's commit, with "-dirty" when tracked files other than bench/results/
    differ from it (regenerating one results file must not mark the next one dirty)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


MB = 10**6  # every memory and size figure in the results is in MB = 10^6 bytes


class PeakRSS:
    """Peak resident memory (bytes) of one process tree, sampled every 0.2 s.

    ``root`` is the tool's own process (default: this one). ``exclude()`` returns pids whose
    trees are left out of ``peak_excluding`` (e.g. the Prefect server a run started or uses)
    but counted in ``peak``."""

    def __init__(self, root: int | None = None, exclude=None) -> None:
        import psutil

        self._proc = psutil.Process(root or os.getpid())
        self._exclude = exclude or (lambda: set())
        self.peak = 0
        self.peak_excluding = 0
        # CPU seconds (user + system) last seen per process of the tree: a process's time up
        # to its last sample counts, also after it exits (the OS forgets the time of processes
        # nobody waits for, such as Ray's workers when its raylet is stopped)
        self._cpu: dict[int, tuple[float, bool]] = {}
        # CPU seconds of the processes already running at the first sample (an excluded server
        # started before): only what they spend while sampled counts in ``excluded_cpu_seconds``
        self._baseline: dict[int, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            excluded: dict[int, psutil.Process] = {}
            for pid in self._exclude():
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    excluded.update({p.pid: p for p in (root, *root.children(recursive=True))})
            try:
                procs = {p.pid: p for p in (self._proc, *self._proc.children(recursive=True))}
            except psutil.Error:
                procs = {}
            # an excluded tree counts in ``peak`` even when it is no longer this tree's child
            # (a server started by an earlier run), so that ``peak`` is always "with it"
            procs = list({**procs, **excluded}.values())
            total = kept = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    rss = p.memory_info().rss
                    total += rss
                    kept += 0 if p.pid in excluded else rss
                    t = p.cpu_times()
                    self._cpu[p.pid] = (t.user + t.system, p.pid in excluded)
            if self._baseline is None:
                self._baseline = {pid: cpu for pid, (cpu, _) in self._cpu.items()}
            self.peak = max(self.peak, total)
            self.peak_excluding = max(self.peak_excluding, kept)
            self._stop.wait(0.2)

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the tree's processes, the excluded trees left out."""
        return sum(cpu for cpu, excluded in self._cpu.values() if not excluded)

    @property
    def excluded_cpu_seconds(self) -> float:
        """CPU seconds the excluded trees (e.g. the Prefect server) spent while sampled."""
        base = self._baseline or {}
        return sum(cpu - base.get(pid, 0.0) for pid, (cpu, excluded) in self._cpu.items() if excluded)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_results(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit(),
              "machine": machine(), "units": "MB = 10^6 bytes; seconds are wall clock", **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


_LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


def _log_times(log: Path) -> list[tuple[float, str]]:
    """(seconds, message) of every timestamped line of a run's log file (only differences count)."""
    from datetime import datetime

    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            stamp = datetime.strptime(line[:23], _LOG_TIME)
            out.append((stamp.timestamp(), line[24:]))
    return out


def run_breakdown(root: Path, release: str, wall_seconds: float, workers: int) -> dict[str, Any]:
    """Where the wall clock of one ``refinery run`` went, from what the run itself left behind:
    its log (Ray's start), its manifest (each stage's wall time, publish) and its shard markers
    (the seconds spent inside step functions, per-worker cold loads included, and the workers'
    CPU seconds in them: on a shared machine the wall seconds also count other processes). What is left of a
    stage's wall time after its compute spread over the workers is orchestration: Prefect task
    runs, Ray scheduling, worker start. Everything outside the flow's stages (CLI start, config
    and stack checks, Ray start and stop, flow run bookkeeping) is ``outside_stages``."""
    manifest = json.loads((root / "releases" / release / "manifest.json").read_text())
    timing = manifest.get("timing", {})
    compute: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for marker in (root / "state" / "work" / release).glob("*/*.done.json"):
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(marker.read_text())
            compute[marker.parent.name] = compute.get(marker.parent.name, 0.0) + float(data.get("seconds") or 0.0)
            cpu[marker.parent.name] = cpu.get(marker.parent.name, 0.0) + float(data.get("cpu_seconds") or 0.0)
    ray_start = ray_wait = None
    log = root / "state" / "logs" / f"{release}.log"
    if log.exists():
        lines = _log_times(log)
        begin = next((t for t, msg in lines if "rayrunner" in msg and "Connecting" in msg), None)
        ready = next((t for t, msg in lines if "rayrunner" in msg and "Using Ray cluster" in msg), None)
        if begin is not None and ready is not None:
            ray_start = ray_wait = round(ready - begin, 2)
        # `refinery run` starts Ray ahead of the flow (flows/warm.py): only the wait is on the clock
        ahead = next((re.search(r"ahead of the flow in ([\d.]+) s \(the flow waited ([\d.]+) s", msg)
                      for _, msg in lines if "rayrunner" in msg and "ahead of the flow in" in msg), None)
        if ahead is not None:
            ray_start, ray_wait = float(ahead.group(1)), float(ahead.group(2))
    order = manifest.get("stages") or sorted(k for k in timing if k != "publish")
    stages = {k: timing[k] for k in order if k in timing}
    stage_wall = sum(stages.values())
    compute_total = sum(compute.values())
    return {
        "wall_seconds": round(wall_seconds, 2),
        "ray_start_seconds": ray_start,
        "ray_wait_seconds": ray_wait,
        "stage_wall_seconds": {k: round(v, 2) for k, v in stages.items()},
        "publish_seconds": round(timing.get("publish", 0.0), 2),
        "step_compute_seconds": {k: round(v, 2) for k, v in sorted(compute.items())},
        "step_cpu_seconds": {k: round(v, 2) for k, v in sorted(cpu.items())},
        "step_compute_over_workers_seconds": round(compute_total / workers, 2),
        "orchestration_seconds": round(max(0.0, stage_wall - compute_total / workers), 2),
        "outside_stages_seconds": round(max(0.0, wall_seconds - stage_wall - timing.get("publish", 0.0)), 2),
        "meaning": "step compute = seconds inside step functions summed over shards (per-worker cold loads "
                   "included), spread over the workers; ray start = Ray's start, ray wait = the part of it the "
                   "run waited for (the CLI starts Ray while it imports and creates the flow run); orchestration = stage wall time minus that; outside "
                   "stages = CLI start, config and stack checks, Ray start and stop, flow bookkeeping",
    }
