"""A shard task's fixed cost: Ray workers build the run's Prefect settings and API client once
per process, not once per task run (Prefect's own engine did both for every task run: about
0.1 CPU-second each, more than most shards' work)."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from tests import prefect_api


@pytest.mark.slow
def test_workers_build_settings_and_client_once_and_every_task_run_is_recorded(stack, ray_local):
    from prefect import flow, task
    from prefect.context import FlowRunContext, SettingsContext
    from prefect.settings import PREFECT_API_URL

    from tasks.config import ExecutionConfig
    from tasks.parallel import make_task_runner

    @task(persist_result=False)
    def probe(i: int) -> tuple[int, int, int, str, int]:
        import os

        from prefect.client.orchestration import get_client
        from prefect.context import SettingsContext

        settings = SettingsContext.get().settings
        return os.getpid(), id(settings), id(get_client(sync_client=True)), str(settings.api.url), i

    @flow(task_runner=make_task_runner(ExecutionConfig(), needs_storage=False))
    def fan_out(n: int) -> tuple[str, list]:
        futures = [probe.with_options(task_run_name=f"probe-{i}").submit(i) for i in range(n)]
        return str(FlowRunContext.get().flow_run.id), [f.result() for f in futures]

    n = 24
    flow_run_id, results = fan_out(n)
    assert sorted(r[4] for r in results) == list(range(n))
    by_pid: dict[int, list] = defaultdict(list)
    for pid, settings_id, client_id, api_url, _ in results:
        by_pid[pid].append((settings_id, client_id))
        assert api_url == str(SettingsContext.get().settings.api.url) == PREFECT_API_URL.value()
    assert any(len(v) >= 2 for v in by_pid.values()), f"no worker ran two tasks: {dict(by_pid)}"
    for pid, seen in by_pid.items():
        assert len({s for s, _ in seen}) == 1, f"worker {pid} built its settings more than once"
        assert len({c for _, c in seen}) == 1, f"worker {pid} made more than one API client"
    # every task run reached the server through the shared clients (states are recorded from
    # the runs' events, a moment after the runs end)
    api = PREFECT_API_URL.value().rstrip("/")
    body = {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
    deadline = time.monotonic() + 60
    while True:
        runs = prefect_api.post(f"{api}/task_runs/filter", json=body, timeout=10).json()
        done = sorted(r["name"] for r in runs if (r.get("state") or {}).get("type") == "COMPLETED")
        if len(done) == n or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done == sorted(f"probe-{i}" for i in range(n))
