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


def scratch_dir(prefix: str) -> Path:
    """A temporary folder for one benchmark run, deleted when the process exits (after the
    server ``ensure_prefect`` starts in it stops: atexit runs last-registered first). A run
    leaves a release, scratch files and a server's state, up to gigabytes nobody reads after."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


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
        self._kind: dict[int, str] = {}
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
                    # a Ray worker renames itself, and a process just started may not show its
                    # command line yet: classified again until it is one of the helpers
                    if self._kind.get(p.pid, "other") in ("other", "ray_worker"):
                        kind = _process_kind(p, self._proc.pid, p.pid in excluded)
                        if kind != "other" or p.pid not in self._kind:
                            self._kind[p.pid] = kind
            if self._baseline is None:
                self._baseline = {pid: cpu for pid, (cpu, _) in self._cpu.items()}
            self.peak = max(self.peak, total)
            self.peak_excluding = max(self.peak_excluding, kept)
            self._stop.wait(0.2)

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the tree's processes, the excluded trees left out."""
        return sum(cpu for cpu, excluded in self._cpu.values() if not excluded)

    def cpu_seconds_by_kind(self) -> dict[str, float]:
        """The tree's CPU seconds by kind of process (the CLI or tool itself, Ray's workers,
        Ray's helpers: GCS, raylet, dashboard, agents, log monitor), excluded trees left out."""
        out: dict[str, float] = {}
        for pid, (cpu, excluded) in self._cpu.items():
            if not excluded:
                kind = self._kind.get(pid, "other")
                out[kind] = round(out.get(kind, 0.0) + cpu, 2)
        return dict(sorted(out.items()))

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


_RAY_HELPERS = ("gcs_server", "raylet", "dashboard", "DashboardAgent", "RuntimeEnvAgent", "log_monitor",
                "autoscaler", "monitor.py")


def _process_kind(proc: Any, root: int, excluded: bool) -> str:
    """What one process of a measured tree is (see :meth:`PeakRSS.cpu_seconds_by_kind`)."""
    if excluded:
        return "excluded"
    if proc.pid == root:
        return "main"
    try:
        line = " ".join(proc.cmdline())
    except Exception:
        return "other"
    # a worker's command line names the raylet too: workers first
    if "default_worker.py" in line or (line.startswith("ray::") and not any(h in line for h in _RAY_HELPERS)):
        return "ray_worker"
    if any(h in line for h in _RAY_HELPERS):
        return "ray_helpers"
    return "other"


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


def timeline_summary(events: list[dict[str, Any]], launch: float, end: float) -> dict[str, Any]:
    """Where one ``refinery run`` spent its wall clock, from its ``REFINERY_TIMELINE`` events
    (tasks/timeline.py): seconds since the command was launched (``launch``, unix time) of each
    milestone, each stage's first submission / first task in a worker / first step / last step
    / last result, and per stage the seconds of Prefect's task engine around the steps in the
    workers (task run minus step) and the workers' idle seconds inside the stage."""
    def at(t: float | None) -> float | None:
        return None if t is None else round(t - launch, 2)

    driver = next((e["pid"] for e in events if e["event"] == "cli_run"), None)

    def first(name: str, **match: Any) -> float | None:
        return next((e["t"] for e in events if e["event"] == name and e["pid"] == driver
                     and all(e.get(k) == v for k, v in match.items())), None)

    def last(name: str, **match: Any) -> float | None:
        ts = [e["t"] for e in events if e["event"] == name and e["pid"] == driver
              and all(e.get(k) == v for k, v in match.items())]
        return ts[-1] if ts else None

    milestones = {name: at(first(name)) for name in (
        "cli_run", "server_launched", "ray_init_start", "ray_ready", "run_modules_imported", "server_ready",
        "flow_call", "runner_enter", "runner_ready", "flow_body")}
    warm = [e for e in events if e["event"] in ("warm_start", "warm_done")]
    milestones["workers_warm_first_start"] = at(min((e["t"] for e in warm if e["event"] == "warm_start"), default=None))
    milestones["workers_warm_last_done"] = at(max((e["t"] for e in warm if e["event"] == "warm_done"), default=None))
    milestones.update({name: at(last(name)) for name in (
        "published", "runner_exit", "runner_exited", "flow_returned", "cli_done", "exit")})
    milestones["process_end"] = at(end)
    stages: dict[str, Any] = {}
    for name in [e["stage"] for e in events if e["event"] == "stage_start"]:
        begin, finish = first("stage_start", stage=name), last("stage_end", stage=name)
        inside = [e for e in events if begin is not None and finish is not None and begin <= e["t"] <= finish]
        enters = [e for e in inside if e["event"] == "task_enter"]
        steps = [e for e in inside if e["event"] in ("step_start", "step_end")]
        task_s = paired_seconds(inside, "task_enter", "task_exit")
        step_s = paired_seconds(steps, "step_start", "step_end")
        workers = {e["pid"] for e in enters}
        busy = task_s
        stages[name] = {
            "start": at(begin), "end": at(finish),
            "first_submit": at(min((e["t"] for e in inside if e["event"] == "stage_first_submit"), default=None)),
            "first_task_in_worker": at(min((e["t"] for e in enters), default=None)),
            "first_step": at(min((e["t"] for e in steps if e["event"] == "step_start"), default=None)),
            "last_step_end": at(max((e["t"] for e in steps if e["event"] == "step_end"), default=None)),
            "last_result": at(max((e["t"] for e in inside if e["event"] == "shard_done"), default=None)),
            "task_runs": len(enters),
            "task_run_seconds": round(task_s, 2),
            "step_seconds": round(step_s, 2),
            "prefect_in_worker_seconds": round(task_s - step_s, 2),
            "worker_idle_seconds": round(max(0.0, len(workers) * (finish - begin) - busy), 2)
            if begin is not None and finish is not None and workers else None,
        }
    return {"seconds_since_launch": milestones, "stages": stages, "driver_pid": driver,
            "meaning": "seconds since `refinery run` was launched; stages: the driver's stage window, "
                       "Prefect's task engine around each step inside the workers (task run minus step), "
                       "and the workers' seconds without a task run inside that window"}


def paired_seconds(events: list[dict[str, Any]], start: str, stop: str) -> float:
    """Seconds each process spent between a ``start`` event and its ``stop``: events pair by
    process and by their stage and shard (steps of one task can run at once in threads:
    tasks.stepkit.in_threads), and a process's overlapping intervals count once (their union)."""
    open_at: dict[tuple, float] = {}
    spans: dict[int, list[tuple[float, float]]] = {}
    for e in events:
        key = (e["pid"], e.get("stage"), e.get("shard"))
        if e["event"] == start:
            open_at[key] = e["t"]
        elif e["event"] == stop and key in open_at:
            spans.setdefault(e["pid"], []).append((open_at.pop(key), e["t"]))
    total = 0.0
    for intervals in spans.values():
        end = float("-inf")
        for a, b in sorted(intervals):
            if b > end:
                total += b - max(a, end)
                end = b
    return total
