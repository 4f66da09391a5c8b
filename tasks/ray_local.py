"""Starting this run's private local Ray, with nothing but Ray imported.

`refinery run` starts Ray in a thread while its main thread imports Prefect and the flow
(flows/warm.py). When that thread imported :mod:`tasks.parallel` first, it imported Prefect
too, in step with the main thread (one GIL, one import lock per module): on a cold run of 100k
documents Ray's start began 5 s after the server's launch under load, and Ray's start, its
workers' start and their warm-up are the run's critical path. This module needs only Ray, so
``ray.init`` starts about half a second after the thread does. :class:`tasks.parallel.RayRunner`
builds its workers' environment with the same functions, so both starts stay identical.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

# Environment every Ray worker needs to report to the same server, safe to show: a joined
# cluster gets it in the job's runtime env, which Ray writes, values included, into its session
# logs (runtime_env_agent.log, world-readable under /tmp/ray), so nothing secret may ever travel
# this way (a private local Ray's workers inherit it from the driver instead: local_init_kwargs).
PROPAGATED_ENV = ("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_LOGGING_LEVEL", "REFINERY_HOME")
# Where the storage is (not who may use it): passed only when a root or input is remote.
STORAGE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")
# prefect-ray's runner starts Ray in this namespace unless told otherwise (named actors live there)
RAY_NAMESPACE = "prefect"
# Where `refinery serve` tells its flow runs (its subprocesses) the address of the Ray it started
SERVE_RAY_ENV = "REFINERY_SERVE_RAY_ADDRESS"
# A custom resource of every local Ray Refinery starts, one fewer than its CPUs: a model actor
# takes as much of it as the CPUs it reserves (llm.actor_cpus). Runs that share one Ray (a
# serve process's runs, a backfill's releases) would otherwise each park a model actor on the
# CPUs until none is left for the shard tasks those actors serve, and every run would wait
# forever; now the last model stage to come waits for its share.
MODEL_SLOT = "refinery_model_slot"


def model_slots(cpus: float | None = None) -> float:
    """The CPUs that model actors of a Ray of ``cpus`` CPUs (default: those this process may
    use) may hold together: one fewer (at least one)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1.0, float(cpus) - 1)


def worker_env(api_url: str, needs_storage: bool) -> dict[str, str]:
    """The environment variables Ray's runtime env hands this run's workers (nothing secret)."""
    names = PROPAGATED_ENV + (STORAGE_ENV if needs_storage else ())
    env = {k: os.environ[k] for k in names if os.environ.get(k)}
    env["PREFECT_API_URL"] = api_url
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def local_init_kwargs(init_kwargs: dict[str, Any], runtime_env: dict[str, Any],
                      quiet: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """``ray.init`` keywords of a driver that starts a private local Ray (no dashboard UI, and
    when ``quiet`` neither the workers' output copied to the terminal nor Ray's own console
    log handler), and the environment variables to set in the driver before ``ray.init``.

    The workers' environment (``runtime_env["env_vars"]``) is not handed to Ray's runtime env:
    set in the driver's own environment, it reaches the raylet the driver starts and every
    worker the raylet starts. A job with a runtime env cannot use the workers Ray starts ahead
    for the first driver (they have the default env), so its first tasks waited for new worker
    processes, on the critical path of every run, while the two idle workers Ray had started
    spent their start-up CPU for nothing: in the 100,000-document benchmark the workers began
    their warm-up 1.23 s after Ray was ready before, 0.51 s (cold) and 0.34 s (warm) after, and
    Ray's workers used 18.87 CPU-s before, 13.19 after (README, "Benchmarks"). Other runtime-env keys a
    config gives stay (and then Ray starts new workers, as before)."""
    kwargs = dict(init_kwargs)
    kwargs.setdefault("namespace", RAY_NAMESPACE)
    runtime_env = dict(runtime_env)
    env = runtime_env.pop("env_vars", {})
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    else:
        kwargs.pop("runtime_env", None)
    kwargs.setdefault("include_dashboard", False)
    kwargs["resources"] = {MODEL_SLOT: model_slots(kwargs.get("num_cpus")), **(kwargs.get("resources") or {})}
    kwargs.setdefault("log_to_driver", not quiet)
    if quiet:
        kwargs.setdefault("configure_logging", False)
    return kwargs, env


class _NotMainThread(logging.Filter):
    """Ray warns that a driver started outside the main thread sets no SIGTERM handler; the CLI
    that starts it early installs the same handler itself (flows/warm.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not the main thread" not in record.getMessage()


_WARMING: list[Any] = []


def init_local_ray(api_url: str, needs_storage: bool, quiet: bool,
                   warm: Callable[..., Any] | None = None, warm_args: tuple[Any, ...] = ()) -> float:
    """Start this process's private local Ray now, as the flow's runner would (same workers'
    environment, same options), and start every worker on ``warm(*warm_args)`` so that worker
    processes start and import while the driver does something else (Ray starts a job's
    workers only when its first tasks arrive). ``api_url``: the Prefect server the workers
    report to (it may still be starting); ``quiet``: as ``tasks.parallel.QUIET_DRIVER`` will be
    when the flow runs. Returns the seconds Ray took to start."""
    import ray

    from tasks.timeline import mark

    t0 = time.perf_counter()
    mark("ray_init_start")
    kwargs, env = local_init_kwargs({}, {"env_vars": worker_env(api_url, needs_storage)}, quiet)
    os.environ.update(env)  # local workers inherit the driver's env (PREFECT_API_URL among it)
    worker_log = logging.getLogger("ray._private.worker")
    hush = _NotMainThread()
    worker_log.addFilter(hush)
    try:
        ray.init("local", **kwargs)
    finally:
        worker_log.removeFilter(hush)
    protect_auth_token()
    seconds = time.perf_counter() - t0
    mark("ray_ready")
    if warm is not None:
        remote = ray.remote(num_cpus=1)(warm).options(name="refinery-warm-worker")
        # fire and forget: a shard task that arrives first waits for the worker, as before
        _WARMING.extend(remote.remote(*warm_args) for _ in range(max(1, int(ray.cluster_resources().get("CPU", 1)))))
    return seconds


def protect_auth_token() -> bool:
    """Make the token of Ray's token auth readable by this user alone. Ray 2.60 turns token
    auth on for a local Ray and writes a new token to ``~/.ray/auth_token`` (or
    ``RAY_AUTH_TOKEN_PATH``) with the process's umask: world-readable under the usual 022, so
    any user of the machine could read it and run code in this user's Ray (a serve process's
    Ray lives for days). Returns whether the file's mode was changed."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    try:
        st = os.stat(path)
        if st.st_uid != os.getuid() or not st.st_mode & 0o077:
            return False
        os.chmod(path, 0o600)
        return True
    except OSError:
        return False


SERVE_PID_ENV = "REFINERY_SERVE_PID"

# Ray's own settings for a serve process's Ray, which mostly waits. Ray starts one worker per CPU
# ahead for the first driver's job, here serve's own, which never runs a task: a joining run is
# another job and starts its own workers, so those only polled. Ray's metrics (exported by its
# dashboard agent) are read by nothing Refinery runs. serve's Ray alone, idle, both ways back to
# back: 2.53 -> 1.47 CPU-s a minute, 489 -> 393 MB unique memory (docs/architecture.md).
SERVE_RAY_SYSTEM_CONFIG: dict[str, Any] = {"prestart_worker_first_driver": False,
                                           "enable_metrics_collection": False}


def start_serve_ray(api_url: str) -> str:
    """Start the private local Ray of a `refinery serve --shared-ray` process, which every flow
    run it starts joins instead of starting its own. Ray's processes inherit this process's
    environment without its secrets: each run hands its workers its own settings through the
    joined-cluster path (tasks/parallel.py: endpoints in the runtime env, secrets by a file
    that only this user can read), and serve's keys must not win over a run's. Returns the
    address, also set in this process's environment for its flow runs (:data:`SERVE_RAY_ENV`,
    with this process's id: only its own children join)."""
    import ray

    from tasks.secrets import SECRET_ENV

    kwargs, env = local_init_kwargs({}, {"env_vars": worker_env(api_url, needs_storage=True)}, quiet=True)
    kwargs["_system_config"] = SERVE_RAY_SYSTEM_CONFIG
    os.environ.update(env)
    kept = {k: os.environ.pop(k) for k in SECRET_ENV if k in os.environ}
    try:
        ray.init("local", **kwargs)
    finally:
        os.environ.update(kept)
    protect_auth_token()
    address = ray.get_runtime_context().gcs_address
    os.environ[SERVE_RAY_ENV] = address
    os.environ[SERVE_PID_ENV] = str(os.getpid())
    return address


def started_processes() -> dict[str, list[Any]] | None:
    """The processes of the local Ray head this process started (Ray's private node record:
    kind -> infos with a ``process``), or None: no such Ray, or a Ray version that lays the
    record out otherwise."""
    import ray

    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    processes = getattr(node, "all_processes", None)
    if not isinstance(processes, dict) or getattr(node, "head", False) is not True:
        return None
    return processes


def serve_ray_alive() -> bool:
    """Whether the GCS server and raylet of the Ray this process started still run."""
    processes = started_processes()
    if processes is None:
        return False
    for kind in ("gcs_server", "raylet"):
        infos = processes.get(kind) or []
        if not infos or any(getattr(i, "process", None) is None or i.process.poll() is not None for i in infos):
            return False
    return True


def withdraw_serve_ray_when_dead(every: float = 5.0) -> threading.Thread:
    """Watch the Ray :func:`start_serve_ray` started; once its GCS server or raylet has gone,
    stop offering it to later flow runs (they start their own Ray, as with --ray-per-run):
    a run that joined a Ray without its raylet failed after a minute of retries."""
    def watch() -> None:
        while SERVE_RAY_ENV in os.environ:
            if not serve_ray_alive():
                os.environ.pop(SERVE_RAY_ENV, None)
                logging.getLogger("refinery").warning(
                    "the Ray of this serve process has stopped; its next runs start their own")
                return
            time.sleep(every)

    thread = threading.Thread(target=watch, name="refinery-serve-ray-watch", daemon=True)
    thread.start()
    return thread


def serve_ray_address(timeout: float = 2.0) -> str | None:
    """The address of the Ray of the `refinery serve` process that started this flow run (its
    parent), when its port answers (a run whose serve's Ray is gone starts its own)."""
    address = os.environ.get(SERVE_RAY_ENV)
    if not address or os.environ.get(SERVE_PID_ENV) != str(os.getppid()):
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return address
    except (OSError, ValueError):
        return None


def check_server(api_url: str, timeout: float = 10.0) -> None:
    """Raise unless the Prefect server at ``api_url`` answers its health check."""
    import httpx

    httpx.get(api_url.rstrip("/") + "/health", timeout=timeout).raise_for_status()
