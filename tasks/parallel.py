"""The one parallel map: one Prefect task run per shard, executed on Ray.

Flows call :func:`shard_map`; the Ray task runner is :class:`RayRunner`, which refuses to
start without a real Prefect server and hands that server's URL to every Ray worker, so
that no worker ever spawns a temporary server of its own (DESIGN §4).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import subprocess
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

import httpx
import ray
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.context import SettingsContext, SyncClientContext
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_API_URL
from prefect_ray import RayTaskRunner

from tasks import stepkit
from tasks.config import ExecutionConfig
from tasks.ingest import InputError
from tasks.ray_local import (  # noqa: F401  (PROPAGATED_ENV, STORAGE_ENV re-exported)
    PROPAGATED_ENV,
    STORAGE_ENV,
    local_init_kwargs,
    protect_auth_token,
    serve_ray_address,
    started_processes,
    worker_env,
)
from tasks.secrets import SECRET_ENV, SECRETS_FILE_ENV, remove_secrets_file, write_secrets_file
from tasks.timeline import mark


class PrefectServerMissing(RuntimeError):
    pass


class ShardFailed(RuntimeError):
    """A shard task failed for a reason other than bad input, after all its retries."""


def require_prefect_server(timeout: float = 10.0) -> str:
    """The API URL of a healthy Prefect server, or a clear error."""
    url = PREFECT_API_URL.value()
    if not url:
        raise PrefectServerMissing(
            "no Prefect server configured: run `refinery up` (or set PREFECT_API_URL to a shared server). "
            "Running without one would start a throwaway server inside every Ray worker."
        )
    try:
        resp = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise PrefectServerMissing(f"Prefect server at {url} is not healthy: {exc}") from exc
    return url


class RayRunner(RayTaskRunner):
    """prefect-ray's runner, with the Prefect server and storage environment handed to workers.

    Secrets (storage keys, the Prefect API key) never travel in Ray's runtime env, whose values
    Ray logs. A local Ray, started by this process, inherits the driver's environment. Workers
    of a cluster that this run joins get only the path of a credentials file readable by this
    user alone, read by a worker start hook, removed when the run ends; nodes that cannot read
    that path use the cluster's own credential chain (instance roles, Kubernetes secrets:
    infra/README.md)."""

    def __init__(self, *args: Any, needs_storage: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.needs_storage = needs_storage
        self._secrets_file: str | None = None

    def duplicate(self) -> RayRunner:
        return type(self)(address=self.address, init_kwargs=self.init_kwargs, needs_storage=self.needs_storage)

    # Prefect hands every task run the driver's whole settings (about 300 values): serialized
    # for each submission (a tree walk over every value) and rebuilt in the worker for each run
    # (pydantic-settings re-reads the environment for each of its ~50 models). That was about
    # 0.1 CPU-second per shard task on each side, more than most shards' work. The settings do
    # not change within a run: serialized once per settings object here, rebuilt once per
    # worker process in :meth:`_run_prefect_task`.
    def submit(self, task: Task, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        current = SettingsContext.get()
        with _SerializedOnce(profile=current.profile, settings=current.settings):
            return super().submit(task, parameters, wait_for, dependencies)

    @staticmethod
    def _run_prefect_task(*upstream_ray_obj_refs: Any, task: Task, task_run_id: Any, context: dict[str, Any],
                          parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        settings = context.get("settings_context")
        run = functools.partial(RayTaskRunner._run_prefect_task, *upstream_ray_obj_refs, task=task,
                                task_run_id=task_run_id, parameters=parameters, wait_for=wait_for,
                                dependencies=dependencies)
        mark("task_enter", task=task.name)
        if not settings:
            try:
                return run(context=context)
            finally:
                mark("task_exit", task=task.name)
        key, hydrated = _hydrated_settings(settings)
        # what Prefect's hydrated_context would enter, from the settings this process already built
        with SettingsContext(profile=hydrated.profile, settings=hydrated.settings):
            # and the API client its engine would create twice per task run (each one loading
            # the CA bundle into a new TLS context: 0.07 CPU-second), made once per process, as
            # a flow run shares one client among its task runs
            client = _worker_client(key)
            token = SyncClientContext.__var__.set(client)
            try:
                return run(context={**context, "settings_context": {}})
            finally:
                SyncClientContext.__var__.reset(token)
                mark("task_exit", task=task.name)

    def __enter__(self):
        if _in_ray_worker():
            # Prefect re-enters the flow's task runner around every task run inside a worker:
            # the checks below were done by the driver, and repeating them cost a health
            # request and a TLS context per task run
            return super().__enter__()
        mark("runner_enter")
        early = EARLY_RAY() if EARLY_RAY is not None and self.address == "local" else None
        if early is not None and early.get("started") and ray.is_initialized():
            super().__enter__()  # prefect-ray adopts the running Ray without owning it
            self._owns_ray = True  # but it was started for this run: it stops with it, as before
            self.logger.info("Ray started ahead of the flow in %.2f s (the flow waited %.2f s for it)",
                             early["seconds"], early["waited"])
            mark("runner_ready")
            return self
        if early is not None and early.get("error"):
            self.logger.warning("starting Ray ahead of the flow failed (%s); starting it now", early["error"])
        self.init_kwargs.update(self.driver_init_kwargs())
        try:
            entered = super().__enter__()
        except BaseException:
            self.forget_secrets()  # __exit__ will not run: the run's secrets file must not stay
            raise
        if self.address == "local":
            protect_auth_token()
        return entered

    def driver_init_kwargs(self, quiet: bool | None = None, api_url: str | None = None) -> dict[str, Any]:
        """``ray.init`` keywords of the driver: checks the Prefect server first, unless given
        ``api_url``, the URL of a server still starting. ``quiet``: as :data:`QUIET_DRIVER`
        (default: its value now)."""
        quiet = QUIET_DRIVER if quiet is None else quiet
        api_url = api_url or require_prefect_server()
        os.environ.update({"PREFECT_API_URL": api_url})  # local workers inherit the driver's env
        if self.address == "local":  # as tasks/ray_local.py starts it ahead of the flow
            kwargs, env = local_init_kwargs(self.init_kwargs, self.worker_runtime_env(api_url), quiet)
            os.environ.update(env)
            return kwargs
        kwargs = dict(self.init_kwargs)
        kwargs["runtime_env"] = self.worker_runtime_env(api_url)
        kwargs.setdefault("log_to_driver", not quiet)
        if quiet:
            kwargs.setdefault("configure_logging", False)
        return kwargs

    def worker_runtime_env(self, api_url: str) -> dict[str, Any]:
        """Ray's runtime env for this run's workers: nothing secret in it (Ray logs it)."""
        env = worker_env(api_url, self.needs_storage)
        runtime_env = dict(self.init_kwargs.get("runtime_env") or {})
        joins_cluster = self.address not in (None, "local")
        if joins_cluster:
            secret_names = SECRET_ENV if self.needs_storage else ("PREFECT_API_KEY",)
            self.forget_secrets()
            self._secrets_file = write_secrets_file({k: os.environ[k] for k in secret_names if os.environ.get(k)})
            if self._secrets_file:
                env[SECRETS_FILE_ENV] = self._secrets_file
                runtime_env["worker_process_setup_hook"] = "tasks.secrets.load_secrets_file"
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
        return runtime_env

    def forget_secrets(self) -> None:
        if self._secrets_file:
            remove_secrets_file(self._secrets_file)
            self._secrets_file = None

    def __exit__(self, *exc_info: Any) -> None:
        mark("runner_exit")
        try:
            if self._owns_ray and self.address == "local" and not _in_ray_worker():
                # a saving of a second: never a reason to skip Ray's own shutdown below
                with contextlib.suppress(Exception):
                    stop_autoscaler_monitor()
            super().__exit__(*exc_info)
        finally:
            self.forget_secrets()
            mark("runner_exited")


def stop_autoscaler_monitor() -> bool:
    """Kill the autoscaler monitor of the private local Ray this process started, ahead of
    ``ray.shutdown``. Ray stops it after the GCS; its SIGTERM handler then reports its own
    "failure" to that stopped GCS and hangs until Ray's one-second grace ends in a SIGKILL
    (measured: 1.04 s of a 1.4 s shutdown, every run, all of it waited for by the user). A
    local Ray without an autoscaling config has nothing for it to save. Reads Ray's private
    node record; when a Ray version lays it out otherwise, nothing is done and the shutdown
    takes its usual time. Returns whether a monitor was stopped."""
    processes = started_processes()
    if processes is None:
        return False
    stopped = False
    for info in processes.get("monitor", []):
        proc = getattr(info, "process", None)
        if proc is None or proc.poll() is not None:
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=1.0)  # reaped here, so that Ray's shutdown finds it gone
            stopped = True
    return stopped


_SERIALIZED: dict[tuple[int, int], tuple[Any, Any, dict[str, Any]]] = {}
_HYDRATED: dict[bytes, SettingsContext] = {}
_CLIENTS: dict[bytes, SyncClientContext] = {}
_SETTINGS_LOCK = threading.Lock()


class _SerializedOnce(SettingsContext):
    """The current settings context, serialized once per (profile, settings) objects."""

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        if not include_secrets:
            return super().serialize(include_secrets=False)
        key = (id(self.profile), id(self.settings))
        with _SETTINGS_LOCK:
            hit = _SERIALIZED.get(key)
            if hit is None or hit[0] is not self.profile or hit[1] is not self.settings:
                # the objects are kept with their serialization, so their ids are not reused
                hit = _SERIALIZED[key] = (self.profile, self.settings, super().serialize(include_secrets=True))
        return hit[2]


def _hydrated_settings(serialized: dict[str, Any]) -> tuple[bytes, SettingsContext]:
    """The settings context a worker builds from a driver's serialized settings, once per
    content (and the content's key)."""
    key = hashlib.sha256(pickle.dumps(serialized, protocol=5)).digest()
    with _SETTINGS_LOCK:
        if key not in _HYDRATED:
            _HYDRATED[key] = SettingsContext(**serialized)
        return key, _HYDRATED[key]


def _worker_client(key: bytes) -> SyncClientContext:
    """This worker process's API client context for the settings ``key`` (entered in the
    current settings context), opened once and kept open for the process's life."""
    with _SETTINGS_LOCK:
        if key not in _CLIENTS:
            ctx = SyncClientContext()
            ctx.client.__enter__()
            try:
                if SettingsContext.get().settings.client.server_version_check_enabled:
                    ctx.client.raise_for_api_version_mismatch_once()  # as SyncClientContext's enter does
            except BaseException:
                ctx.client.__exit__(None, None, None)  # the task fails as before; no open client left
                raise
            _CLIENTS[key] = ctx
        return _CLIENTS[key]


def _in_ray_worker() -> bool:
    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


# Set by `refinery run` when it started the run's local Ray ahead of the flow (flows/warm.py):
# waits for that start and returns {"started", "seconds", "waited", "error"}, once; None when
# nothing was started.
EARLY_RAY: Callable[[], dict[str, Any] | None] | None = None


def make_task_runner(execution: ExecutionConfig, needs_storage: bool = True) -> RayRunner:
    """Join the configured cluster (config, else RAY_ADDRESS, else the Ray of the `refinery
    serve` process that started this flow run); otherwise start a private local Ray ("local"),
    even when a `ray start` cluster happens to run on this machine.
    ``needs_storage``: whether any root or input is remote (its storage settings then reach
    the workers)."""
    return RayRunner(address=execution.ray_address or os.environ.get("RAY_ADDRESS") or serve_ray_address()
                     or "local", needs_storage=needs_storage)


def _retry_unless_bad_input(task: Task, task_run: Any, state: Any) -> bool:
    """A file that cannot be read will not become readable by retrying."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return True


def shard_task(fn: Callable[..., dict[str, Any]], name: str) -> Task:
    """A Prefect task around a step function; results live in storage, not in Prefect. The step
    learns its Ray node (for its marker) from here, so that no step module imports Ray."""

    # Prefect reads the step's own signature (functools.wraps) for the task's parameters. Ray
    # pickles this wrapper by value: it names only modules (stepkit, ray) and the step, which
    # pickle by reference, never the ContextVar itself, which cannot be pickled.
    @functools.wraps(fn)
    def on_node(*args: Any, **kwargs: Any) -> dict[str, Any]:
        token = stepkit.STEP_NODE.set(ray.get_runtime_context().get_node_id() if ray.is_initialized() else None)
        try:
            return fn(*args, **kwargs)
        finally:
            stepkit.STEP_NODE.reset(token)

    return task(
        on_node, name=name, cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=_retry_unless_bad_input
    )


# Set by a flow to hear about finished shard tasks (a progress artifact, for example).
PROGRESS: ContextVar[Callable[[str, int, int], None] | None] = ContextVar("refinery_progress", default=None)
# Process-wide listeners (the terminal's live progress): (stage, done, total, shard result or None)
# at a stage's start and after every finished shard task.
ShardListener = Callable[[str, int, int, "dict[str, Any] | None"], None]
_LISTENERS: list[ShardListener] = []
# Set by `refinery run` without -v: Ray then neither copies its workers' output to the driver's
# terminal (the lines stay in Ray's session logs; task logs reach the Prefect UI as always) nor
# installs its own console log handler (its driver messages go where the CLI routed logging).
QUIET_DRIVER = False


def add_shard_listener(listener: ShardListener) -> Callable[[], None]:
    """Hear about every shard task of this process's flows; returns the function that stops it."""
    _LISTENERS.append(listener)
    return lambda: _LISTENERS.remove(listener) if listener in _LISTENERS else None


def _tell(stage: str, done: int, total: int, result: dict[str, Any] | None) -> None:
    for listener in list(_LISTENERS):
        with contextlib.suppress(Exception):  # a display must never fail a run
            listener(stage, done, total, result)


class GroupInputError(InputError):
    """Some shards of a group had bad input: the group's task run fails (never retried, as a
    shard's bad input), as a lone shard's would, and carries every shard's outcome."""

    def __init__(self, message: str, outcome: dict[str, Any]) -> None:
        super().__init__(message, outcome)  # both in args: the exception crosses Ray pickled
        self.outcome = outcome

    def __str__(self) -> str:
        return str(self.args[0])


def run_group(step: Callable[..., dict[str, Any]], calls: Sequence[tuple[str, tuple[Any, ...]]]) -> dict[str, Any]:
    """``step(*args)`` for every ``(shard, args)`` of one group, one after the other, in one
    task run: ``{"results": {shard: marker}, "failures": {shard: error}}``. A shard's bad
    input is its own failure: the others go on, then the task run fails with
    :class:`GroupInputError` carrying both. Anything else fails the group at once, whose retry
    skips the shards already done (every step writes its marker last and returns it when it
    exists)."""
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for shard, args in calls:
        try:
            results[shard] = step(*args)
        except InputError as exc:
            failures[shard] = f"{exc}"
        except Exception as exc:  # the group's retry goes on from here; the log names the shard
            exc.add_note(f"in shard {shard} of the group {group_name([c[0] for c in calls])}")
            raise
    outcome = {"results": results, "failures": failures}
    if failures:
        first = min(failures)
        raise GroupInputError(f"{len(failures)} of {len(calls)} shards had bad input; shard {first}: "
                              f"{failures[first]}", outcome)
    return outcome


def _notes(exc: BaseException) -> str:
    """An error's notes (``run_group`` adds the failing shard's), for a one-line message."""
    return "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))


def group_name(shards: Sequence[str]) -> str:
    """A group's part of its task run's name: its first and last shard (``00000..00007``);
    no dash in it, so ``name.rsplit("-", 1)[0]`` stays the step's label."""
    return shards[0] if len(shards) == 1 else f"{shards[0]}..{shards[-1]}"


def shard_map(
    step: Task, calls: Sequence[tuple[str, tuple[Any, ...]]], execution: ExecutionConfig, stage: str,
    groups: Sequence[Sequence[int]] | None = None, group_task: Task | None = None,
    step_fn: Callable[..., dict[str, Any]] | None = None,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Run ``step(*args)`` once per ``(shard, args)`` as Prefect task runs on the flow's Ray
    runner. Returns the results by shard and the failures (shard, error), in shard order.

    ``groups`` (indices into ``calls``, with ``group_task``, a task of :func:`run_group`, and
    ``step_fn``, the step function): a group of several shards runs as one task run of
    ``group_task`` (each task run costs the driver, the server and a worker a fixed amount of
    CPU, which small shards do not pay back); a group of one runs as ``step``, as without groups."""
    logger = get_run_logger()
    units: list[tuple[str, Task, tuple[Any, ...], list[str] | None]] = []
    if groups is None:
        units = [(shard, step, args, None) for shard, args in calls]
    else:
        for g in groups:
            members = [calls[i] for i in g]
            if len(members) == 1:
                units.append((members[0][0], step, members[0][1], None))
            elif members:
                assert group_task is not None and step_fn is not None, "groups need group_task and step_fn"
                units.append((group_name([m[0] for m in members]), group_task, (step_fn, members),
                              [m[0] for m in members]))
    futures = {}
    for name, tsk, args, members in units:
        configured = tsk.with_options(
            task_run_name=f"{stage}-{name}",
            # a group's retry skips its finished shards, so each shard keeps the budget it
            # would have alone: a group of n fails only after n times the retries
            retries=execution.max_retries * len(members or [name]),
            retry_delay_seconds=execution.retry_delay_seconds,
        )
        if not futures:
            mark("stage_first_submit", stage=stage)
        futures[configured.submit(*args)] = (name, members)
    mark("stage_submitted", stage=stage, tasks=len(futures))
    total = sum(len(members or [name]) for name, members in futures.values())
    _tell(stage, 0, total, None)
    results: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    errors: list[tuple[str, BaseException]] = []
    done = 0
    for future in as_completed(list(futures)):
        name, members = futures[future]
        mark("shard_done", stage=stage, shard=name)
        outcome: list[tuple[str, dict[str, Any] | None]] = []
        try:
            value = future.result()
            if members is None:
                outcome.append((name, value))
            else:
                lost = [shard for shard in members if shard not in value["results"]]
                if lost:  # cannot happen by construction; never let a shard vanish silently
                    raise RuntimeError(f"group {name} returned no result for shards {lost}")
                outcome.extend((shard, value["results"][shard]) for shard in members)
        except GroupInputError as exc:  # some shards of a group: theirs recorded, the others' kept
            for shard in members or [name]:
                if shard in exc.outcome["failures"]:
                    failures.append({"stage": stage, "shard": shard, "error": exc.outcome["failures"][shard]})
                    logger.error("%s shard %s: %s", stage, shard, exc.outcome["failures"][shard])
                outcome.append((shard, exc.outcome["results"].get(shard)))
        except InputError as exc:  # bad input: recorded, the rest of the release goes on
            failures.append({"stage": stage, "shard": name, "error": f"{exc}"})
            logger.error("%s shard %s: %s", stage, name, exc)
            outcome.append((name, None))
        except Exception as exc:  # anything else failed after its retries: the release must not lose it
            errors.append((name, exc))
            logger.error("%s shard %s failed after retries: %r%s", stage, name, exc, _notes(exc))
            outcome.extend((shard, None) for shard in (members or [name]))
        for shard, value in outcome:
            if value is not None:
                results[shard] = value
            done += 1
            _tell(stage, done, total, value)
            if done == total or done % max(1, total // 10) == 0:
                hook = PROGRESS.get()
                if hook is not None:
                    hook(stage, done, total)
                logger.info("%s: %d/%d shards done (%d failed)", stage, done, total, len(failures) + len(errors))
    if errors:
        shard, exc = sorted(errors, key=lambda e: e[0])[0]
        raise ShardFailed(f"{stage} shard {shard} failed after its retries: {exc!r}{_notes(exc)}") from exc
    return dict(sorted(results.items())), sorted(failures, key=lambda f: f["shard"])
