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

Run as ``python -m flows.prefect_server --host H --port P --db PATH``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sqlite3
import sys
from pathlib import Path

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

    server = get_current_settings().server
    uvicorn.run(
        app=create_app(final=True),
        host=args.host,
        port=args.port,
        timeout_keep_alive=server.api.keepalive_timeout,
        ws_ping_interval=server.api.websocket_ping_interval,
        ws_ping_timeout=server.api.websocket_ping_timeout,
        log_level=server.logging_level.lower(),
    )


if __name__ == "__main__":
    sys.exit(main())
