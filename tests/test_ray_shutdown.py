"""The end of a run: the private local Ray stops without waiting out its autoscaler monitor."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = """
import psutil, ray
from tasks.parallel import stop_autoscaler_monitor

assert stop_autoscaler_monitor() is False  # no Ray started here: nothing to stop
ray.init("local", include_dashboard=False, num_cpus=1, log_to_driver=False)
node = ray._private.worker._global_node
monitor = node.all_processes["monitor"][0].process.pid
others = [p.process.pid for kind, ps in node.all_processes.items() if kind != "monitor" for p in ps]
assert psutil.pid_exists(monitor)
assert stop_autoscaler_monitor() is True
assert not psutil.pid_exists(monitor), "the monitor was killed and reaped"
assert all(psutil.pid_exists(p) for p in others), "GCS, raylet and the other helpers run on"

@ray.remote
def answer():
    return 41 + 1

assert ray.get(answer.remote()) == 42, "a local Ray works without its monitor"
ray.shutdown()
left = [p for p in others if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
assert not left, left
print("ok")
"""


def test_the_autoscaler_monitor_is_stopped_first_and_ray_still_works_and_stops():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr


def test_the_runner_stops_the_monitor_on_exit_and_still_shuts_ray_down_when_that_fails(monkeypatch):
    """The runner that owns this run's local Ray stops the monitor before prefect-ray's exit
    (which calls ray.shutdown); a failure there must never skip that exit."""
    from prefect_ray import RayTaskRunner

    from tasks import parallel

    calls: list[str] = []

    def failing_stop() -> bool:
        calls.append("monitor")
        raise RuntimeError("Ray laid its node record out otherwise")

    monkeypatch.setattr(parallel, "stop_autoscaler_monitor", failing_stop)
    monkeypatch.setattr(parallel, "_in_ray_worker", lambda: False)
    monkeypatch.setattr(RayTaskRunner, "__exit__", lambda self, *exc: calls.append("ray exit"))
    runner = parallel.RayRunner(address="local")
    runner._owns_ray = True
    runner.__exit__(None, None, None)
    assert calls == ["monitor", "ray exit"]

    calls.clear()
    runner = parallel.RayRunner(address="ray://head.example:10001")  # a cluster's Ray is not ours to touch
    runner._owns_ray = True
    runner.__exit__(None, None, None)
    assert calls == ["ray exit"]
