"""The tests' own calls to the Prefect server's REST API, sent through Prefect's own HTTP client.

The server answers 503 when SQLite refused a write because another writer committed first
(Prefect's ``is_client_retryable_exception``): a deferred transaction that reads and then writes
cannot wait for the lock, so the answer comes at once and means "send it again". Prefect's client,
which every Refinery call to the server goes through, retries 429/502/503/408 with back-off; a
test calling the API with bare httpx did not, and failed in CI on one such 503 (a run created with
POST /flow_runs/ while two served pipelines wrote logs and states). Answers other than those come
back as they are (4xx included): tests assert on them.
"""

from __future__ import annotations

from typing import Any

import httpx
from prefect.client.base import PrefectHttpxSyncClient


def request(method: str, url: str, *, timeout: float = 30, **kwargs: Any) -> httpx.Response:
    """One call to an absolute API url, retried as Prefect's client retries it."""
    with PrefectHttpxSyncClient(timeout=timeout, raise_on_all_errors=False) as client:
        return client.request(method, url, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)
