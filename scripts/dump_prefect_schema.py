"""Regenerate flows/prefect_schema/prefect-<version>.sql: the schema of an empty Prefect
database as the installed Prefect's own Alembic migrations build it, dumped as SQL.

    python scripts/dump_prefect_schema.py            # writes the file for the installed version

The dump holds no rows but the Alembic revision (a migrated database has no others), so two
runs give the same bytes. The local stack's server (flows/prefect_server.py) replays it into
a new database instead of running every migration at its first start.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def migrated_database(folder: Path) -> Path:
    """A new SQLite database in ``folder`` migrated by Prefect (in a child process, since
    Prefect reads its database URL once, at import)."""
    import subprocess

    db = folder / "prefect.db"
    code = ("import asyncio\nfrom prefect.server.database import provide_database_interface\n"
            "asyncio.run(provide_database_interface().create_db())\n")
    env = {**os.environ, "PREFECT_HOME": str(folder), "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db}",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return db


def _sorted_constraints(statement: str) -> str:
    """A CREATE TABLE statement with its closing run of table constraints in name order. The
    migrations rebuild SQLite tables from reflected constraint sets, whose order changes from
    one run to the next; the order means nothing to SQLite, and sorting fixes the dump's bytes."""
    lines = statement.split("\n")
    if not lines[0].startswith("CREATE TABLE") or lines[-1] != ");":
        return statement
    first = len(lines) - 1
    while first > 1 and lines[first - 1].startswith("\tCONSTRAINT "):
        first -= 1
    block = sorted(line.rstrip().removesuffix(",") for line in lines[first:-1])
    return "\n".join(lines[:first] + [line + ", " for line in block[:-1]] + block[-1:] + lines[-1:])


def schema_dump(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        statements = [_sorted_constraints(s) for s in con.iterdump()]
    finally:
        con.close()
    # indexes, likewise, come in an order that changes between runs and means nothing
    slots = [i for i, s in enumerate(statements) if s.startswith(("CREATE INDEX", "CREATE UNIQUE INDEX"))]
    for i, statement in zip(slots, sorted(statements[i] for i in slots), strict=True):
        statements[i] = statement
    return "\n".join(statements) + "\n"


def main() -> None:
    from flows.prefect_server import schema_dump_path

    with tempfile.TemporaryDirectory(prefix="prefect-schema-") as tmp:
        text = schema_dump(migrated_database(Path(tmp)))
    out = schema_dump_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"{out}: {len(text):,} characters")


if __name__ == "__main__":
    main()
