"""One Ray shared by several runs (a `refinery serve` process's flow runs): how a run finds it,
and why runs that share it cannot deadlock on their model actors. The served runs themselves
are in tests/test_orchestration.py (both scheduled releases record the serve process's Ray)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tasks.config import ExecutionConfig
from tasks.parallel import make_task_runner
from tasks.ray_local import (
    MODEL_SLOT,
    SERVE_PID_ENV,
    SERVE_RAY_ENV,
    local_init_kwargs,
    model_slots,
    serve_ray_address,
)
from tests.conftest import REPO


def test_a_flow_run_joins_its_serve_process_ray_only_while_it_answers(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(SERVE_RAY_ENV, raising=False)
    assert serve_ray_address() is None and make_task_runner(ExecutionConfig()).address == "local"
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        monkeypatch.setenv(SERVE_RAY_ENV, address)
        monkeypatch.setenv(SERVE_PID_ENV, str(os.getpid()))  # set by a serve that is not this process's parent
        assert serve_ray_address() is None
        monkeypatch.setenv(SERVE_PID_ENV, str(os.getppid()))
        assert serve_ray_address() == address and make_task_runner(ExecutionConfig()).address == address
        # a cluster the config or RAY_ADDRESS names still comes first
        assert make_task_runner(ExecutionConfig(ray_address="10.0.0.9:6379")).address == "10.0.0.9:6379"
        monkeypatch.setenv("RAY_ADDRESS", "10.0.0.8:6379")
        assert make_task_runner(ExecutionConfig()).address == "10.0.0.8:6379"
        monkeypatch.delenv("RAY_ADDRESS")
    # the serve process (and its Ray) is gone: the run starts its own Ray, as before
    assert serve_ray_address() is None and make_task_runner(ExecutionConfig()).address == "local"
    monkeypatch.setenv(SERVE_RAY_ENV, "not-an-address")
    assert serve_ray_address() is None


def test_every_local_ray_keeps_one_cpu_from_model_actors():
    assert [model_slots(n) for n in (1, 2, 3, 16)] == [1, 1, 2, 15]
    kwargs, _ = local_init_kwargs({"num_cpus": 4}, {}, quiet=True)
    assert kwargs["resources"] == {MODEL_SLOT: 3}
    kwargs, _ = local_init_kwargs({"num_cpus": 4, "resources": {"gpu_slot": 1}}, {}, quiet=True)
    assert kwargs["resources"] == {MODEL_SLOT: 3, "gpu_slot": 1}, "a config's own resources are kept beside it"


# Two runs on one 2-CPU Ray each start a model actor (1 CPU each, as by default). Without the
# slot, both actors hold a CPU and the shard task that the first run's stage needs never starts.
DEADLOCK = """
import sys, threading, ray
from flows.model_actor import start_actor, stop_actor
from tasks.errors import ReleaseError
from tasks.llm.config import LLMConfig
from tasks.ray_local import local_init_kwargs

cpus, actor_cpus = int(sys.argv[1]), float(sys.argv[2])
kwargs, _ = local_init_kwargs({"num_cpus": cpus}, {}, quiet=True)
ray.init("local", **kwargs)
try:
    start_actor("greedy", LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", actor_cpus=cpus))
    raise AssertionError("an actor that would hold every CPU was started")
except ReleaseError as exc:
    assert "llm.actor_cpus" in str(exc), exc
cfg = LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", cache=False, actor_cpus=actor_cpus)
first, handle_a = start_actor("run-a", cfg)
second = {}
t = threading.Thread(target=lambda: second.update(zip(("name", "handle"), start_actor("run-b", cfg))), daemon=True)
t.start()
t.join(3)
assert t.is_alive(), "the second run's actor waits for a model slot"

@ray.remote(num_cpus=1)
def shard():
    return "shard ran"

print(ray.get(shard.remote(), timeout=120))  # the first run's stage goes on beside its actor
stop_actor(first)
del handle_a
t.join(120)
assert not t.is_alive() and second["name"].startswith("refinery-llm-run-b"), "the second actor starts next"
print(ray.get(shard.remote(), timeout=120))
stop_actor(second["name"])
ray.shutdown()
print("ok")
"""


@pytest.mark.parametrize("cpus, actor_cpus", [(2, 1.0), (4, 2.0)])
def test_runs_sharing_one_ray_take_turns_for_model_actors_instead_of_deadlocking(cpus, actor_cpus):
    out = subprocess.run([sys.executable, "-c", DEADLOCK, str(cpus), str(actor_cpus)], cwd=REPO, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0 and out.stdout.split() == ["shard", "ran", "shard", "ran", "ok"], \
        out.stdout + out.stderr[-3000:]


TOKEN = """
import os, stat
from pathlib import Path
import ray
from tasks.ray_local import start_serve_ray
os.umask(0o022)
address = start_serve_ray("http://127.0.0.1:9/api")
token = Path(os.environ["HOME"]) / ".ray" / "auth_token"
assert os.environ["RAY_AUTH_MODE"] == "token" and token.stat().st_size > 0

@ray.remote
def key():
    return os.environ.get("AWS_SECRET_ACCESS_KEY")

# a worker of serve's Ray (the raylet's environment) has none of serve's keys: a run's own come by file
print(oct(stat.S_IMODE(token.stat().st_mode)), os.environ["REFINERY_SERVE_RAY_ADDRESS"] == address,
      ray.get(key.remote()), os.environ["AWS_SECRET_ACCESS_KEY"])
ray.shutdown()
"""


def test_a_serve_ray_token_is_private_and_its_workers_do_not_inherit_serve_keys(tmp_path):
    """Ray writes its auth token with the umask (0644 here); a serve's Ray lives for days.
    And a run's workers must get the run's keys: serve's, inherited, would win over them."""
    env = {**os.environ, "HOME": str(tmp_path), "AWS_SECRET_ACCESS_KEY": "SERVE-ONLY-SECRET"}
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    out = subprocess.run([sys.executable, "-c", TOKEN], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.split() == ["0o600", "True", "None", "SERVE-ONLY-SECRET"], \
        out.stdout + out.stderr[-3000:]


WATCH = """
import os, time
import ray
from tasks.ray_local import SERVE_RAY_ENV, serve_ray_alive, start_serve_ray, withdraw_serve_ray_when_dead
start_serve_ray("http://127.0.0.1:9/api")
withdraw_serve_ray_when_dead(every=0.5)
time.sleep(2)
alive_before = serve_ray_alive() and SERVE_RAY_ENV in os.environ
ray._private.worker._global_node.all_processes["raylet"][0].process.kill()
deadline = time.monotonic() + 60
while SERVE_RAY_ENV in os.environ and time.monotonic() < deadline:
    time.sleep(0.2)
print("RESULT", alive_before, SERVE_RAY_ENV in os.environ, flush=True)
os._exit(0)
"""


def test_a_serve_whose_ray_lost_its_raylet_stops_offering_it(tmp_path):
    """A run that joined a Ray whose raylet had died failed after a minute of retries: serve
    now withdraws the address, and its next runs start their own Ray."""
    out = subprocess.run([sys.executable, "-c", WATCH], cwd=REPO, capture_output=True, text=True, timeout=300)
    result = [ln.split()[1:] for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]  # Ray prints too
    assert out.returncode == 0 and result == [["True", "False"]], out.stdout[-3000:] + out.stderr[-3000:]


PRESTART = """
import time
import psutil
import ray
from tasks.ray_local import local_init_kwargs, start_serve_ray

def is_worker(cmd):  # a worker names itself ray::IDLE once started; the raylet's own command names the script too
    return bool(cmd) and (cmd[0].startswith("ray::IDLE") or any(c.endswith("default_worker.py") for c in cmd[:3]))

def idle_workers():
    found = []
    for p in psutil.Process().children(recursive=True):
        try:  # a process may exit (or be a zombie) between the listing and the look
            if is_worker(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found

# the control: a run's own Ray starts one worker per CPU ahead for its driver; how long it takes here
kwargs, env = local_init_kwargs({}, {"env_vars": {}}, quiet=True)
start = time.monotonic()
ray.init("local", **kwargs)
while not idle_workers() and time.monotonic() - start < 120:
    time.sleep(0.1)
took = time.monotonic() - start
control = len(idle_workers())
ray.shutdown()
if not control:
    raise SystemExit("the control Ray prestarted no worker in 120 s")
start_serve_ray("http://127.0.0.1:9/api")
time.sleep(max(5.0, 2 * took))
print("RESULT", control > 0, len(idle_workers()), flush=True)
ray.shutdown()
"""


def test_a_serve_ray_starts_no_workers_for_its_own_idle_job():
    """Ray starts a worker per CPU ahead for the first driver's job; serve's job runs no task
    (its runs are other jobs with workers of their own), so those workers only polled while
    serve waited for days. The control in the same process shows Ray prestarting them."""
    out = subprocess.run([sys.executable, "-c", PRESTART], cwd=REPO, capture_output=True, text=True, timeout=400)
    result = [ln.split()[1:] for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and result == [["True", "0"]], out.stdout[-3000:] + out.stderr[-3000:]
