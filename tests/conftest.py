"""Shared fixtures. The suite starts the real services it needs (Prefect server, SeaweedFS
S3, a local Ray) once per session and stops them at the end.

Prefect reads its settings on first import, so the API URL of the test server (on a free
port chosen here) is put into the environment before any test module imports Prefect.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REFINERY_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
ARTIFACTS = REPO / "tests" / "artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SESSION_DIR = Path(tempfile.mkdtemp(prefix="refinery-tests-"))
PREFECT_PORT = _free_port()
S3_PORT = _free_port()
os.environ["REFINERY_HOME"] = str(_SESSION_DIR / "home")
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect-client")
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{PREFECT_PORT}/api"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["RAY_DEDUP_LOGS"] = "0"
for _key in ("RAY_ADDRESS", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    os.environ.pop(_key, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    # The session folder holds the stack's databases, Ray's spill and every release the suite
    # wrote (hundreds of MB over a whole run); set REFINERY_KEEP_TEST_HOME=1 to look at it after.
    if not os.environ.get("REFINERY_KEEP_TEST_HOME"):
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def shared(name: str) -> Path:
    """A file of ../shared/data; a missing one fails the test (never skips it)."""
    path = SHARED_DATA / name
    if not path.exists():
        raise FileNotFoundError(
            f"shared test data {path} is missing: the suite reads ../shared/data beside the checkout "
            "(or REFINERY_SHARED_DATA)"
        )
    return path


@pytest.fixture(scope="session")
def stack():
    """The real local stack: Prefect server and SeaweedFS S3 on loopback."""
    from flows.stack import Stack

    st = Stack(Path(os.environ["REFINERY_HOME"]))
    st.up(prefect_port=PREFECT_PORT, s3_port=S3_PORT, with_s3=True, timeout=120)
    env = st.environment()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield st
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    st.down()


@pytest.fixture(scope="session")
def ray_local(stack):
    """One local Ray for the session (workers inherit the stack's environment); the flows'
    task runner joins it instead of starting a Ray per flow run."""
    import ray

    # "local": always a private instance, never a `ray start` cluster that happens to run here
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
