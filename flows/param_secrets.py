"""Storage keys that reach a flow run's parameters.

Prefect keeps a flow run's parameters in clear text in its database, shows them on the run's
page, and logs them when they fail validation. The UI's run form has no key fields
(tasks/config.py) and the server checks runs from a deployment against that form's schema,
but a caller can switch the check off (the UI has a switch for it) or create a run around it
(``POST /flow_runs/``). So keys are replaced by :data:`MARKER` wherever Refinery can see them:
by the flow body of a run that gets them (flows/curate.py ``refuse_parameter_secrets``), and by
``refinery serve`` in every run of its deployments, including runs that never start (cancelled,
or scheduled while serve is down) and runs from before the form lost its key fields.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tasks.config import STORAGE_KEY_FIELDS

# what a removed key is replaced by, rather than deleting the field: a run swept before its
# process picks it up still carries "keys" and is refused by its flow body instead of running
# with the serving process's keys (its process gets the parameters fetched at pickup)
MARKER = "<removed: storage keys never go in flow-run parameters>"
FLOWS = ("curate", "refresh", "backfill")  # Prefect names deployments within their flow
log = logging.getLogger("refinery.serve")


def without_keys(parameters: dict[str, Any]) -> dict[str, Any] | None:
    """``parameters`` with each storage key in its config replaced by :data:`MARKER`, or None
    when it holds none (absent, null, empty, or already replaced)."""
    cfg = parameters.get("config")
    storage = cfg.get("storage") if isinstance(cfg, dict) else None
    if not isinstance(storage, dict):
        return None
    held = [k for k in STORAGE_KEY_FIELDS if isinstance(storage.get(k), str) and storage[k] and storage[k] != MARKER]
    if not held:
        return None
    return {**parameters, "config": {**cfg, "storage": {**storage, **dict.fromkeys(held, MARKER)}}}


def scrub_run(client: Any, flow_run_id: Any, parameters: dict[str, Any]) -> bool:
    """Replace the keys in the server's record of one run; whether it held any."""
    clean = without_keys(parameters)
    if clean is None:
        return False
    client.update_flow_run(flow_run_id, parameters=clean)
    return True


def sweep(pipeline: str, newest: int | None = None, client: Any = None) -> int:
    """Replace storage keys in the runs of pipeline ``pipeline``'s deployments (all of them, or
    the ``newest`` by expected start); returns how many runs held keys. A run that cannot be
    updated (deleted meanwhile) is left for the next sweep."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    if client is None:
        with get_client(sync_client=True) as own:
            return sweep(pipeline, newest, own)
    page = 200 if newest is None else min(200, newest)
    scrubbed = offset = 0
    while True:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOWS))),
                                     deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[pipeline])),
                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=page, offset=offset)
        for run in runs:
            try:
                scrubbed += scrub_run(client, run.id, dict(run.parameters))
            except Exception as exc:
                log.warning("could not remove storage keys from flow run %s: %s", run.id, type(exc).__name__)
        offset += len(runs)
        if len(runs) < page or (newest is not None and offset >= newest):
            return scrubbed


def sweep_in_background(pipeline: str, every: float = 30.0, newest: int = 200) -> threading.Thread:
    """Sweep all runs of the pipeline's deployments now, then the ``newest`` every ``every``
    seconds, until the process ends. A run created with a start time in the past behind
    ``newest`` newer runs waits for the next serve start."""

    def loop() -> None:
        limit: int | None = None
        failing = False
        while True:
            try:
                n = sweep(pipeline, limit)
                if n:
                    log.warning("removed storage keys from the parameters of %d flow run(s) of pipeline %s; "
                                "rotate those keys: the Prefect server held them in clear text", n, pipeline)
                limit, failing = newest, False
            except Exception as exc:  # the server restarting: try again at the next round, say so once
                if not failing:
                    log.warning("could not check flow runs for storage keys: %s", type(exc).__name__)
                failing = True
            time.sleep(every)

    thread = threading.Thread(target=loop, name="refinery-key-sweeper", daemon=True)
    thread.start()
    return thread


class NoParameterDump(logging.Filter):
    """Prefect logs a flow run's whole parameters when they fail validation (prefect/flows.py,
    ``validate_parameters``) to the console, which a served run streams into `refinery serve`'s
    output; they may hold storage keys. The record keeps its first line (which flow), and the
    run's state message keeps what was wrong (Prefect builds it without the values)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith("Parameter validation failed for flow"):
            record.msg = msg.split(":", 1)[0] + " (parameters not logged: they may hold credentials; " \
                                                 "the run's state message says what was wrong)"
            record.args = ()
        return True


def hush_parameter_dumps() -> None:
    logger = logging.getLogger("prefect.flows")
    if not any(isinstance(f, NoParameterDump) for f in logger.filters):
        logger.addFilter(NoParameterDump())
