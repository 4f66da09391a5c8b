"""Credentials for Ray workers of a joined cluster, without writing them where Ray logs.

Ray records a job's runtime env (``env_vars`` values included) in its session logs, so the
driver writes the secrets into a file that only its user can read and hands the workers the
file's *path*; a worker start hook reads it into the worker's environment. The file is
removed when the run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from pathlib import Path

# Variables whose values must never appear in a log, a state file or Ray's runtime env.
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PREFECT_API_KEY")
SECRETS_FILE_ENV = "REFINERY_SECRETS_FILE"


def _secrets_dir() -> Path:
    home = os.environ.get("REFINERY_HOME") or str(Path.home() / ".refinery")
    path = Path(home).expanduser() / "secrets"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_secrets_file(values: dict[str, str]) -> str | None:
    """Write ``values`` to a new file readable by this user only; its path, or None if empty."""
    if not values:
        return None
    folder = _secrets_dir()
    path = folder / f"ray-{uuid.uuid4().hex}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(values, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return str(path)


def remove_secrets_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def load_secrets_file() -> None:
    """Ray worker start hook: put the secrets of the file named by REFINERY_SECRETS_FILE into
    this worker's environment (values already set win). A node that cannot read the file keeps
    its own credential chain."""
    path = os.environ.get(SECRETS_FILE_ENV)
    if not path:
        return
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return
    for key, value in values.items():
        if key in SECRET_ENV and isinstance(value, str):
            os.environ.setdefault(key, value)
