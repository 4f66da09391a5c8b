"""The local stack's Prefect server process: Prefect's own API app (``create_app``) served by
uvicorn, as ``prefect server start`` does, minus the parts of that command a private server
pays for at every start without using them (its CLI framework, settings round trips, the
interactive pre-start check).

A fresh database gets Prefect's schema from ``prefect_schema/prefect-<version>.sql``, a dump
of the database Prefect's own Alembic migrations build for that version
(``scripts/dump_prefect_schema.py`` regenerates it; a test checks it against a real migration).
Replaying the dump takes milliseconds where the ~200 migrations take about 5 s of CPU. Prefect
still runs ``alembic upgrade head`` on it at start (a no-op at the dumped revision), and any
other Prefect version falls back to its own migrations.

Two changes to how it answers, both for SQLite's single writer: a slot request for no limits
writes nothing (:func:`skip_empty_slot_increments`), and a request refused for a busy database
is run again before the answer goes out (:class:`RetryBusyRequests`).

Run as ``python -m flows.prefect_server --host H --port P --db PATH``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).parent / "prefect_schema"


def schema_dump_path(version: str | None = None) -> Path:
    """Where the schema dump of a Prefect version is (it may not exist)."""
    return SCHEMA_DIR / f"prefect-{version or importlib.metadata.version('prefect')}.sql"


def seed_database(db: Path) -> bool:
    """Create ``db`` from the installed Prefect version's schema dump if the file does not
    exist yet and a dump for that version ships. Returns whether it did."""
    dump = schema_dump_path()
    if db.exists() or not dump.is_file():
        return False
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(db.name + f".seed-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(dump.read_text())
        finally:
            con.close()
        # a half-written database must never look like a migrated one: move it in whole
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def skip_empty_slot_increments() -> bool:
    """Make Prefect's slot increment for no concurrency limits a no-op, as its result already is.

    Every task run asks the server for slots of its tags' concurrency limits (tag:refinery,
    ...), of which there are none unless a user creates them; a worker remembers "none" for 5 s
    only, so each Ray worker asks every 5 s. The server reads the limits, then runs an UPDATE of
    no rows in the same deferred SQLite transaction: a write after a read, which SQLite refuses
    at once ("database is locked", busy_timeout does not apply) whenever another write committed
    in between, as the run's logs and task-run events do all the time. Prefect answers 503 and
    its client retries after 2 s of back-off, so one shard task in about every two such requests
    waited 2 s before its step started (measured: 1 to 5 times per ingest of 100k documents, besides each worker's first task; at the
    stage's barriers that is the stage's wall clock). With no limit ids the UPDATE matches nothing
    and returns ``rowcount == 0 == len(ids)``: True. Returning True without it gives the same
    answer and no write. Returns whether Prefect's function was replaced (False: already done,
    or a Prefect version without it; the server then behaves as Prefect's own)."""
    from prefect.server.models import concurrency_limits_v2 as limits

    original = getattr(limits, "bulk_increment_active_slots", None)
    if original is None or getattr(original, "_refinery_skips_empty", False):
        return False

    @functools.wraps(original)
    async def bulk_increment_active_slots(*args: object, **kwargs: object) -> bool:
        ids = kwargs.get("concurrency_limit_ids")
        if ids is not None and not args and len(ids) == 0:  # type: ignore[arg-type]
            return True
        return await original(*args, **kwargs)

    bulk_increment_active_slots._refinery_skips_empty = True  # type: ignore[attr-defined]
    limits.bulk_increment_active_slots = bulk_increment_active_slots
    return True


def is_busy_database(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite refusing a statement for another connection's write (the busy
    case of Prefect's ``is_client_retryable_exception``; Prefect answers 503 for other database
    errors too, which are not this)."""
    import sqlalchemy.exc

    orig = getattr(exc, "orig", None)
    return (isinstance(exc, sqlalchemy.exc.OperationalError) and isinstance(orig, sqlite3.OperationalError)
            and (getattr(orig, "sqlite_errorname", None) in {"SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT"}
                 or "database is locked" in orig.args))


class RetryBusyRequests:
    """ASGI middleware: an API request refused for a busy SQLite database is run again in the
    server, a few times within about a second, before an answer goes out.

    SQLite refuses a write at once when another write committed after the transaction's read
    (``busy_timeout`` does not apply), and Prefect answers 503: the transaction was rolled back
    and the same request sent again normally succeeds. Prefect's client sends it again after 2 s
    of back-off (4 s after a second refusal); the UI and bare HTTP callers do not, so a run
    started from the UI could fail at random, and a test's own POST failed CI that way. Running
    the request again here is what Prefect's client does with every request it sends (the same
    request, whole), only sooner: the contention lasts milliseconds. The request body is read
    whole first (the API's bodies are small JSON); each attempt gets a fresh copy of the scope
    (Starlette's routing rewrites it in place), and a 503 answer is held back until the attempt
    ends, so that the exception behind it (Starlette raises it on after the answer) decides.

    Only a busy database is run again (:func:`is_busy_database`), and only while the request has
    taken less than ``BUDGET_SECONDS`` (a busy error after SQLite's own 60 s wait is not run
    again); any other answer, a 503 for another database error included, goes out as before,
    with its exception raised on for uvicorn to log. A busy refusal still standing after the last
    attempt goes out as a 503 on a connection kept open: raised on, uvicorn closed the connection
    the caller's next request came on. Each request run again leaves one line in the log, with
    its final answer. Websockets, the UI's files and lifespan pass through."""

    DELAYS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)  # seconds before each new attempt
    BUDGET_SECONDS = 5.0

    def __init__(self, app: Any, prefix: str = "/api/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        import asyncio
        import random
        import time

        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the caller went away before its body came
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body, start, attempts = b"".join(chunks), time.monotonic(), 0
        for delay in (*self.DELAYS, None):
            attempts += 1
            status, held, error = await self._attempt(dict(scope), body, receive, send)
            if not held or error is None or not is_busy_database(error):
                break  # answered (any answer but a 503), or a 503 for something else
            if delay is None or time.monotonic() - start > self.BUDGET_SECONDS:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
        busy = bool(held) and error is not None and is_busy_database(error)
        if attempts > 1 or busy:  # one line per such request (before its answer goes out)
            print(f"refinery: {scope['method']} {scope['path']} met a busy database, answered {status}"
                  f" after {attempts} attempts", flush=True)
        for message in held:
            await send(message)
        if error is not None and not busy:
            raise error  # anything but a busy refusal answered 503: as before, for uvicorn to log

    async def _attempt(self, scope: dict[str, Any], body: bytes, receive: Any,
                       send: Any) -> tuple[int | None, list[dict[str, Any]], BaseException | None]:
        """Run the request once. An answer other than 503 goes out as it comes; a 503's messages
        are held back. Returns the answer's status, the held messages and the exception the app
        raised, if any."""
        given, held, status = False, [], None

        async def replay() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the caller's disconnect, as usual

        async def answer(message: dict[str, Any]) -> None:
            nonlocal status
            if status is None and message["type"] == "http.response.start":
                status = message["status"]
            if status is not None and status != 503:
                await send(message)
            else:
                held.append(message)

        try:
            await self.app(scope, replay, answer)
        except Exception as exc:
            return status, held, exc
        return status, held, None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.prefect_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", type=Path, required=True, help="the SQLite file PREFECT_API_DATABASE_CONNECTION_URL names")
    args = ap.parse_args(argv)
    seeded = seed_database(args.db)
    print(f"refinery: Prefect database {args.db} ({'created from the schema dump' if seeded else 'as found'})",
          flush=True)

    import uvicorn
    from prefect.server.api.server import create_app
    from prefect.settings import get_current_settings

    skip_empty_slot_increments()
    server = get_current_settings().server
    uvicorn.run(
        app=RetryBusyRequests(create_app(final=True)),
        host=args.host,
        port=args.port,
        timeout_keep_alive=server.api.keepalive_timeout,
        ws_ping_interval=server.api.websocket_ping_interval,
        ws_ping_timeout=server.api.websocket_ping_timeout,
        log_level=server.logging_level.lower(),
    )


if __name__ == "__main__":
    sys.exit(main())
