"""Flow runs whose process is gone.

A flow run whose process is killed (SIGKILL, the OOM killer, a closed terminal) never reports
its end, so the Prefect server shows it RUNNING forever, also after a resumed run published
the release. Every curate flow run therefore records which process runs it, as
``refinery:<host>:<pid>:<process start time>`` in the flow run's ``infrastructure_pid`` (the
field Prefect's workers fill with their process id). The next run, and ``refinery status``,
mark every unfinished flow run whose recorded process no longer exists on this host as
CRASHED, with its unfinished task runs. The start time tells a reused pid from the original
process; runs recorded on another host are left alone (their process cannot be checked here).
"""

from __future__ import annotations

import os
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


def watch_this_run(flow_run_id: str | None, logger: Any) -> None:
    """At the start of a flow run: record its process, and crash the runs of dead ones. A
    Prefect API problem here is logged, never fatal: the run matters more than the cleanup."""
    if not flow_run_id:
        return
    try:
        record_process(flow_run_id)
        for run in crash_orphans():
            logger.warning("flow run %s (%s) was left running by a process that is gone: marked crashed",
                           run["name"], run["id"])
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logger.warning("could not check for flow runs of killed processes: %r", exc)
