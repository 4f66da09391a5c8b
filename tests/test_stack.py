"""The local stack: health, clear errors on taken ports, and `down` stopping only its own."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import psutil
import pytest

from flows.stack import Stack, StackError


def test_taken_port_gives_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(StackError) as exc:
            Stack(tmp_path).up(prefect_port=port, with_s3=False, timeout=5)
    msg = str(exc.value)
    assert f"port {port}" in msg and "already in use" in msg and "--prefect-port" in msg


def test_down_stops_only_processes_it_started(tmp_path):
    ours = subprocess.Popen(["sleep", "60"], start_new_session=True)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        st = Stack(tmp_path)
        st.dir.mkdir(parents=True)
        st.state_file.write_text(json.dumps({"services": {
            "prefect": {"pid": ours.pid, "create_time": psutil.Process(ours.pid).create_time(),
                        "api_url": "http://127.0.0.1:1/api"},
            # a recorded pid whose start time does not match: the pid was reused by someone else
            "s3": {"pid": stranger.pid, "create_time": psutil.Process(stranger.pid).create_time() - 1000,
                   "port": 1},
        }}))
        assert st.status()["prefect"]["running"] and not st.status()["s3"]["running"]
        assert st.down(timeout=5) == ["prefect"]
        time.sleep(0.2)
        assert ours.poll() is not None
        assert stranger.poll() is None
        assert st.read_state()["services"] == {}
    finally:
        for p in (ours, stranger):
            p.kill()
            p.wait()


@pytest.mark.slow
def test_session_stack_is_healthy_on_loopback(stack):
    status = stack.status()
    assert status["prefect"]["healthy"] and status["s3"]["healthy"]
    for name in ("prefect", "s3"):
        pid = stack.read_state()["services"][name]["pid"]
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
        listening = [c.laddr.ip for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening and all(ip == "127.0.0.1" for ip in listening), (name, listening)
    env = stack.environment()
    assert env["PREFECT_API_URL"].startswith("http://127.0.0.1:")
    assert oct(stack.env_file.stat().st_mode & 0o777) == "0o600"
