"""A shard task's fixed cost: CPU seconds per Prefect task run on Ray, ours against prefect-ray's.

The same flow submits no-op tasks (one small argument, one small result) through prefect-ray's
own ``RayTaskRunner`` and through Refinery's ``RayRunner`` (tasks/parallel.py: settings
serialized once, and built once per worker process with one API client there), each on a fresh
local Ray with two workers, against one Prefect server started here. After a warm-up wave (the
workers' start and imports are not what is measured), ``--tasks`` tasks run; the figures are
the Ray workers' CPU seconds (their processes only, sampled before and after), the driver's
CPU seconds and the wall clock, per task.

    python bench/task_overhead.py [--tasks 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ensure_prefect, package_version, write_results  # noqa: E402


def _workers_cpu() -> float:
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("ray::") and "Agent" not in p.name():
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def measure(runner_kind: str, n: int) -> dict:
    import ray
    from prefect import flow, task
    from prefect_ray import RayTaskRunner

    from tasks.config import ExecutionConfig
    from tasks.parallel import make_task_runner

    @task(persist_result=False)
    def noop(i: int, payload: dict) -> int:
        return i

    runner = (make_task_runner(ExecutionConfig(), needs_storage=False) if runner_kind == "refinery"
              else RayTaskRunner(address="local", init_kwargs={"include_dashboard": False, "num_cpus": 2}))

    @flow(task_runner=runner)
    def fan_out() -> dict:
        payload = {"x": list(range(100))}
        [f.result() for f in [noop.submit(i, payload) for i in range(4)]]  # workers started and warm
        time.sleep(1.0)
        w0, d0, t0 = _workers_cpu(), time.process_time(), time.perf_counter()
        assert sorted(f.result() for f in [noop.submit(i, payload) for i in range(n)]) == list(range(n))
        wall = time.perf_counter() - t0
        driver = time.process_time() - d0
        time.sleep(1.0)  # let the workers' event and log threads finish their sends
        workers = _workers_cpu() - w0
        return {"tasks": n, "worker_cpu_seconds_per_task": round(workers / n, 4),
                "driver_cpu_seconds_per_task": round(driver / n, 4), "wall_seconds_per_task": round(wall / n, 4)}

    try:
        return fan_out()
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=60)
    args = ap.parse_args()
    ensure_prefect(Path(tempfile.mkdtemp(prefix="refinery-task-overhead-")) / "home")
    res = {kind: measure(kind, args.tasks) for kind in ("prefect_ray", "refinery")}
    res["worker_cpu_ratio"] = round(res["prefect_ray"]["worker_cpu_seconds_per_task"]
                                    / max(res["refinery"]["worker_cpu_seconds_per_task"], 1e-9), 1)
    res["versions"] = {"prefect": package_version("prefect"), "prefect_ray": package_version("prefect-ray"),
                       "ray": package_version("ray")}
    path = write_results("task_overhead", res)
    print(res, "->", path)


if __name__ == "__main__":
    main()
