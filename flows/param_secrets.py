"""Storage keys that reach a flow run's parameters.

Prefect keeps a flow run's parameters in clear text in its database, shows them on the run's
page, and logs them when they fail validation. The UI's run form has no key fields
(tasks/config.py) and the server checks runs from a deployment against that form's schema,
but a caller can switch the check off (the UI has a switch for it) or create a run around it
(``POST /flow_runs/``). So keys are removed wherever Refinery can see them: by the flow body of
a run that gets them (flows/curate.py ``refuse_parameter_secrets``), and by ``refinery serve``
from every run of its deployments, including runs that never start (cancelled, or scheduled
while serve is down) and runs from before the form lost its key fields.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

KEY_FIELDS = ("access_key_id", "secret_access_key")
log = logging.getLogger("refinery.serve")


def without_keys(parameters: dict[str, Any]) -> dict[str, Any] | None:
    """``parameters`` with the storage keys taken out of their config, or None when it holds none."""
    cfg = parameters.get("config")
    storage = cfg.get("storage") if isinstance(cfg, dict) else None
    if not isinstance(storage, dict) or not any(k in storage for k in KEY_FIELDS):
        return None
    clean = {k: v for k, v in storage.items() if k not in KEY_FIELDS}
    return {**parameters, "config": {**cfg, "storage": clean}}


def scrub_run(client: Any, flow_run_id: Any, parameters: dict[str, Any]) -> bool:
    """Remove the keys from the server's record of one run; whether it held any."""
    clean = without_keys(parameters)
    if clean is None:
        return False
    client.update_flow_run(flow_run_id, parameters=clean)
    return True


def sweep(pipeline: str, newest: int | None = None) -> int:
    """Remove storage keys from the runs of pipeline ``pipeline``'s deployments (all of them, or
    the ``newest`` by expected start); returns how many runs held keys."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    page = 200 if newest is None else min(200, newest)
    scrubbed = offset = 0
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[pipeline])),
                                         sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=page, offset=offset)
            scrubbed += sum(scrub_run(client, r.id, dict(r.parameters)) for r in runs)
            offset += len(runs)
            if len(runs) < page or (newest is not None and offset >= newest):
                return scrubbed


def sweep_in_background(pipeline: str, every: float = 30.0, newest: int = 200) -> threading.Thread:
    """Sweep all runs of the pipeline's deployments now, then the ``newest`` every ``every``
    seconds (a run with keys is among the newest when it is created), until the process ends."""

    def loop() -> None:
        limit: int | None = None
        while True:
            try:
                n = sweep(pipeline, limit)
                if n:
                    log.warning("removed storage keys from the parameters of %d flow run(s) of pipeline %s; "
                                "rotate those keys: the Prefect server held them in clear text", n, pipeline)
                limit = newest
            except Exception as exc:  # the server restarting: try again at the next round
                log.warning("could not check flow runs for storage keys: %s", type(exc).__name__)
            stop.wait(every)

    stop = threading.Event()
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
