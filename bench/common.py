"""What every benchmark shares: the standard corpus, the local stack, the results file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
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
            self.peak = max(self.peak, total)
            self.peak_excluding = max(self.peak_excluding, kept)
            self._stop.wait(0.2)

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
