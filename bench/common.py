"""What every benchmark shares: the standard corpus, the local stack, the results file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
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


def ensure_prefect(home: Path) -> None:
    """Point this process at a Prefect server: PREFECT_API_URL if set, else a local stack
    under ``home`` (started here). Must run before Prefect is imported."""
    if os.environ.get("PREFECT_API_URL"):
        return
    import atexit

    from flows.stack import Stack, _free_port

    stack = Stack(home)
    stack.up(prefect_port=_free_port(), with_s3=False)
    atexit.register(stack.down)  # the benchmark's server goes with it
    os.environ.update(stack.environment())


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_results(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
              **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
