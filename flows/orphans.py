"""Flow runs whose process is gone.

A flow run whose process is killed (SIGKILL, the OOM killer, a closed terminal) never reports
its end, so the Prefect server shows it RUNNING forever, also after a resumed run published
the release. Every curate flow run therefore records which process runs it, as
``refinery:<host>:<pid>:<process start time>`` in the flow run's ``infrastructure_pid`` (the
field Prefect's workers fill with their process id). The next run, and ``refinery status``,
mark every unfinished flow run whose recorded process no longer exists on this host as
CRASHED, with its unfinished task runs. The start time tells a reused pid from the original
process; runs recorded on another host are left alone (their process cannot be checked here).

Ray leaves processes behind too. The local cluster a run starts shares the driver's fate for its
GCS server and raylet, but the raylet's agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) are reparented to init and live on after a SIGKILL, holding memory
and the session's files. :func:`reap_ray_orphans` stops the processes of every Ray session on
this host whose raylet and GCS server are both gone (so no cluster can still use them); a
session that still has either, e.g. one a ``ray start`` head keeps, is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
from typing import Any
from uuid import UUID

import psutil

MARK = "refinery"
UNFINISHED = ("RUNNING", "PENDING", "SCHEDULED", "CANCELLING")


def process_mark(pid: int | None = None) -> str:
    proc = psutil.Process(pid if pid is not None else os.getpid())
    return f"{MARK}:{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}"


def process_alive(mark: str | None) -> bool | None:
    """Whether the process a mark names still runs: True, False, or None when unknown (not our
    mark, or another host's)."""
    if not mark or not mark.startswith(f"{MARK}:"):
        return None
    try:
        head, pid, start = mark.rsplit(":", 2)
        host = head.split(":", 1)[1]
        pid_n, start_t = int(pid), float(start)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        return f"{psutil.Process(pid_n).create_time():.3f}" == f"{start_t:.3f}"
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # it exists


def record_process(flow_run_id: str | UUID) -> None:
    """Record this process in the flow run (see the module's docstring)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(str(flow_run_id)), infrastructure_pid=process_mark())


def crash_orphans(limit: int = 1000) -> list[dict[str, Any]]:
    """Mark every unfinished flow run of a dead refinery process CRASHED (and its unfinished
    task runs); returns what was marked."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    unfinished = [StateType(s) for s in UNFINISHED]
    marked: list[dict[str, Any]] = []
    with get_client(sync_client=True) as client:
        runs: list[Any] = []
        while len(runs) < limit:  # every page first: marking changes what the filter returns
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished))),
                limit=200, offset=len(runs))
            runs += page
            if len(page) < 200:
                break
        for run in runs:
            if process_alive(run.infrastructure_pid) is not False:
                continue
            message = (f"its process ({run.infrastructure_pid}) is gone: killed or lost; marked crashed by "
                       f"refinery from process {os.getpid()}")
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(
                    any_=unfinished))))
            for tr in tasks:
                client.set_task_run_state(tr.id, Crashed(message=message), force=True)
            marked.append({"id": str(run.id), "name": run.name, "process": run.infrastructure_pid,
                           "task_runs": len(tasks)})
    return marked


# Ray names its session folders session_<date>_<time>_<micro>_<pid of the process that started it>.
_SESSION = re.compile(r"/(session_\d{4}-\d\d-\d\d_[\d-]+_\d+_\d+)/")
_CLUSTER_CORE = ("raylet", "gcs_server")


def ray_session(proc: psutil.Process) -> str | None:
    """The Ray session a process of ours belongs to, from the session files it holds open (the
    agents rewrite their command line, so it cannot be read from there)."""
    try:
        if proc.uids().real != os.getuid():
            return None
        name = proc.name()
        if not (name.startswith("ray::") or name in _CLUSTER_CORE or "ray" in " ".join(proc.cmdline()[:3])):
            return None
        for f in proc.open_files():
            m = _SESSION.search(f.path)
            if m:
                return m.group(1)
        for arg in proc.cmdline():
            m = _SESSION.search(arg + "/")
            if m:
                return m.group(1)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return None


def reap_ray_orphans(grace: float = 5.0) -> list[dict[str, Any]]:
    """Stop the leftover processes of dead local Ray sessions (see the module's docstring);
    returns ``[{"session", "pids"}]`` for what was stopped."""
    sessions: dict[str, list[psutil.Process]] = {}
    alive_core: set[str] = set()
    for proc in psutil.process_iter():
        session = ray_session(proc)
        if session is None:
            continue
        sessions.setdefault(session, []).append(proc)
        try:
            if proc.name() in _CLUSTER_CORE and proc.status() != psutil.STATUS_ZOMBIE:
                alive_core.add(session)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    reaped = []
    for session, procs in sorted(sessions.items()):
        if session in alive_core:
            continue
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGTERM)
        _, survivors = psutil.wait_procs(procs, timeout=grace)
        for proc in survivors:  # an agent stuck in a gRPC call ignores SIGTERM
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(survivors, timeout=grace)
        reaped.append({"session": session, "pids": sorted(p.pid for p in procs)})
    return reaped


def watch_this_run(flow_run_id: str | None, logger: Any) -> None:
    """At the start of a flow run: record its process, crash the runs of dead ones and stop the
    Ray processes they left. A Prefect API problem here is logged, never fatal: the run matters
    more than the cleanup."""
    try:
        for left in reap_ray_orphans():
            logger.warning("stopped %d process(es) of Ray session %s, left by a killed run", len(left["pids"]),
                           left["session"])
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logger.warning("could not check for Ray processes of killed runs: %r", exc)
    if not flow_run_id:
        return
    try:
        record_process(flow_run_id)
        for run in crash_orphans():
            logger.warning("flow run %s (%s) was left running by a process that is gone: marked crashed",
                           run["name"], run["id"])
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logger.warning("could not check for flow runs of killed processes: %r", exc)
