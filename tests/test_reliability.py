"""Reliability (RELIABILITY.md): bad input of many kinds in one real run, a Ray worker and
the flow process killed mid-run, secrets kept out of every output, path traversal refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import layout
from tasks.config import ConfigError, InputSpec, PipelineConfig, parse_config
from tasks.storage import StorageSpec
from tests.conftest import shared
from tests.corpora import write_jsonl
from tests.releases import verify_release

REFINERY = str(Path(sys.executable).with_name("refinery"))


def _wiki(n: int, start: int = 0) -> list[str]:
    return pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).column("text").to_pylist()[start:start + n]


def _bad_inputs(folder: Path) -> tuple[dict[str, str], dict[str, int], int]:
    """One file per kind of bad input, generated here; returns the files that must fail (with
    the problem their error must name), the row-level reasons expected, and the valid rows."""
    folder.mkdir(parents=True)
    good = shared("cc_web_samples/cc_web_samples.parquet").read_bytes()
    texts = _wiki(240)
    fails: dict[str, str] = {}
    reasons: dict[str, int] = {}
    valid = 0
    # 1 truncated Parquet
    (folder / "01-truncated.parquet").write_bytes(good[: len(good) // 3])
    fails["01-truncated.parquet"] = "not a readable Parquet file"
    # 2 wrong schema: no text column at all
    pq.write_table(pa.table({"body": texts[:5]}), folder / "02-wrong-schema.parquet")
    fails["02-wrong-schema.parquet"] = "no text column 'text'"
    # 3 non-string text column
    pq.write_table(pa.table({"text": [1, 2, 3]}), folder / "03-int-text.parquet")
    fails["03-int-text.parquet"] = "has type int64"
    # 4 nulls in the text column (rows), with valid rows around them
    pq.write_table(pa.table({"text": texts[0:10] + [None, None] + texts[10:20]}), folder / "04-nulls.parquet")
    reasons["missing text"] = reasons.get("missing text", 0) + 2
    valid += 20
    # 5 JSONL rows: missing text key, non-string text, invalid UTF-8, invalid JSON, not an object, blank text
    lines = [json.dumps({"text": t}).encode() for t in texts[20:40]]
    lines += [b'{"body": "no text key"}', b'{"text": 42}', b'{"text": "caf\xe9"}', b"{oops", b"[1, 2]",
              b'{"text": "   "}']
    (folder / "05-rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reasons["missing text"] += 1
    for r in ("text is not a string (int)", "invalid UTF-8", "invalid JSON", "not a JSON object (list)",
              "empty text"):
        reasons[r] = reasons.get(r, 0) + 1
    valid += 20
    # 6 one document of 50 MB (published: no max_chars is set), next to a valid row
    big = " ".join(["lorem"] * 8_400_000)
    assert len(big) >= 50_000_000
    write_jsonl(folder / "06-huge.jsonl", [{"text": big}, {"text": texts[40]}])
    valid += 2
    # 7 empty files
    (folder / "07-empty.jsonl").write_bytes(b"")
    (folder / "07-empty.parquet").write_bytes(b"")
    fails["07-empty.parquet"] = "Parquet file size is 0 bytes"
    # 8 duplicate ids (an input whose column map names an id column): the later row is rejected
    write_jsonl(folder.parent / "ids" / "08-dup-ids.jsonl", [
        {"id": "same", "text": texts[41]}, {"id": "same", "text": texts[42]}, {"id": "other", "text": texts[43]}])
    reasons["duplicate id 'same' (first at row 0)"] = 1
    valid += 2
    # 9 deeply nested metadata: beyond any parser's depth is a reject; deep but parsable is kept
    deep = '{"text": ' + json.dumps(texts[44]) + ', "meta": ' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "}"
    ok_deep = {"text": texts[45], "meta": json.loads('{"a":' * 200 + "1" + "}" * 200)}
    (folder / "09-nested.jsonl").write_text(deep + "\n" + json.dumps(ok_deep) + "\n")
    reasons["invalid JSON: nested too deeply"] = 1
    valid += 1
    # 10 corrupt zstd
    bad = write_jsonl(folder / "10-corrupt.jsonl.zst", [{"text": t} for t in texts[50:100]], "zst")
    bad.write_bytes(bad.read_bytes()[:300])
    fails["10-corrupt.jsonl.zst"] = "corrupt compressed stream"
    # 11 a directory named like a data file
    (folder / "11-directory.jsonl").mkdir()
    fails["11-directory.jsonl"] = "is a directory"
    # 12 a gzip file that is not gzip
    (folder / "12-not-gzip.jsonl.gz").write_bytes(b"this is not gzip data at all")
    fails["12-not-gzip.jsonl.gz"] = "corrupt compressed stream"
    # 13 a valid file among them all
    pq.write_table(pa.table({"text": texts[100:200]}), folder / "13-good.parquet")
    valid += 100
    return fails, reasons, valid


@pytest.mark.slow
def test_bad_input_of_every_kind_in_one_run(stack, ray_local, tmp_path):
    from flows.curate import run_curate

    fails, reasons, valid = _bad_inputs(tmp_path / "in")
    root = str(tmp_path / "corpus")
    m = run_curate(PipelineConfig(release="bad", output=root, inputs=[
        InputSpec(uri=str(tmp_path / "in"), source="bad"),
        InputSpec(uri=str(tmp_path / "ids"), source="ids", columns={"id": "id"})],
                                  exact_dedup={"enabled": False}, near_dedup={"enabled": False}))
    storage = StorageSpec(root).open()
    verify_release(storage, m)
    failed = {Path(f["uri"]).name: f["error"] for f in m["failures"]}
    assert set(failed) == set(fails)
    for name, problem in fails.items():  # the error names the file and the problem
        assert str(tmp_path / "in" / name) in failed[name] and problem in failed[name], failed[name]
    rejects = pa.concat_tables([storage.read_parquet(f["path"]) for f in m["outputs"]["rejects"]])
    got: dict[str, int] = {}
    for r in rejects.column("reason").to_pylist():
        key = r if r in reasons else next((k for k in reasons if r.startswith(k)), r)
        got[key] = got.get(key, 0) + 1
    assert got == reasons
    assert all(rejects.column("input_uri").to_pylist())  # each reject names its file (and row)
    # every valid row is published, the funnel and the files agree
    assert m["totals"]["documents"] == valid
    assert m["funnel"][0]["docs_in"] == valid + sum(reasons.values())
    longest = max(pa.compute.max(pa.compute.utf8_length(storage.read_parquet(f["path"]).column("text"))).as_py()
                  for f in m["outputs"]["documents"])
    assert longest >= 50_000_000  # the 50 MB document went through


def _run_in_thread(cfg: PipelineConfig) -> tuple[threading.Thread, dict]:
    from flows.curate import run_curate

    box: dict = {}

    def target():
        try:
            box["manifest"] = run_curate(cfg)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            box["error"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def _wait_for(predicate, timeout: float = 300, step: float = 0.05) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise TimeoutError("condition not reached")


def _checksums(manifest: dict) -> dict[str, str]:
    return {f["path"].replace(manifest["release"], "R"): f["sha256"]
            for kind in ("documents", "attributes", "rejects") for f in manifest["outputs"][kind]}


def _inputs(tmp_path: Path) -> list[InputSpec]:
    """Eight files; each row carries its own `added` time, so that two releases in different
    roots (created at different times) can be byte-identical."""
    texts = _wiki(4000)
    for k in range(8):
        write_jsonl(tmp_path / "in" / f"part-{k}.jsonl", [
            {"id": f"{k}-{i}", "text": t, "fetched": f"2026-11-{1 + k:02d}T00:00:00Z"}
            for i, t in enumerate(texts[k * 500:(k + 1) * 500])])
    return [InputSpec(uri=str(tmp_path / "in"), source="wiki", columns={"id": "id", "added": "fetched"})]


@pytest.mark.slow
def test_a_killed_ray_worker_changes_no_byte_of_the_release(stack, ray_local, tmp_path):
    """SIGKILL the Ray worker running a shard task mid-stage: Ray/Prefect retry it, and the
    published release equals a clean run's, checksum for checksum."""
    import psutil

    from flows.curate import run_curate

    inputs = _inputs(tmp_path)
    clean = run_curate(PipelineConfig(release="clean", output=str(tmp_path / "a"), inputs=inputs,
                                      quality={"enabled": True, "language_id": {"enabled": False}}))
    cfg = PipelineConfig(release="clean", output=str(tmp_path / "b"), inputs=inputs,
                         quality={"enabled": True, "language_id": {"enabled": False}})
    storage = StorageSpec(cfg.output).open()
    th, box = _run_in_thread(cfg)
    # wait until the quality stage is under way (its first marker), then kill a worker running it
    _wait_for(lambda: any(p.endswith(".done.json") for p in storage.list("state/work/clean/quality")))
    victims = [p for p in psutil.process_iter(["cmdline"]) if any("ray::quality" in c for c in
                                                                  (p.info["cmdline"] or []))]
    assert victims, "no Ray worker was running a quality task"
    victims[0].send_signal(signal.SIGKILL)
    th.join(600)
    assert "error" not in box, box.get("error")
    m = box["manifest"]
    verify_release(storage, m)
    assert _checksums(m) == _checksums(clean)
    assert m["totals"] == clean["totals"] and m["funnel"] == clean["funnel"]


@pytest.mark.slow
def test_a_killed_flow_process_resumes_to_the_same_release(stack, tmp_path):
    """SIGKILL `refinery run` mid-run: nothing is published; the rerun skips the finished
    shards and publishes a release identical to an uninterrupted run's."""
    inputs = _inputs(tmp_path)
    cfg = {"output": str(tmp_path / "corpus"), "inputs": [i.model_dump(mode="json") for i in inputs],
           "quality": {"enabled": True, "language_id": {"enabled": False}}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps({**cfg, "release": "killed"}))
    env = dict(os.environ)
    storage = StorageSpec(cfg["output"]).open()
    proc = subprocess.Popen([REFINERY, "run", "-c", str(path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: len([p for p in storage.list("state/work/killed/quality")
                               if p.endswith(".done.json")]) >= 2, timeout=600)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the flow process and the Ray it started
        proc.wait(60)
    assert not storage.exists(layout.manifest_path("killed"))
    done_before = {p: storage.read_bytes(p) for p in storage.list("state/work/killed") if p.endswith(".done.json")}
    rerun = subprocess.run([REFINERY, "run", "-c", str(path)], env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    # the killed process's flow run no longer shows RUNNING: the rerun marked it crashed
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        killed = [r for r in client.read_flow_runs(limit=200)
                  if (r.infrastructure_pid or "").split(":")[2:3] == [str(proc.pid)]]
    assert killed and {r.state.type.value for r in killed} == {"CRASHED"}
    m = storage.read_json(layout.manifest_path("killed"))
    verify_release(storage, m)
    for p, data in done_before.items():  # finished shards were skipped, not redone
        assert storage.read_bytes(p) == data
    path.write_text(json.dumps({**cfg, "output": str(tmp_path / "clean"), "release": "killed"}))
    clean = subprocess.run([REFINERY, "run", "-c", str(path)], env=env, capture_output=True, text=True, timeout=900)
    assert clean.returncode == 0, clean.stderr
    reference = StorageSpec(str(tmp_path / "clean")).open().read_json(layout.manifest_path("killed"))
    assert _checksums(m) == _checksums(reference)


@pytest.mark.slow
def test_secrets_appear_in_no_output(stack, ray_local, tmp_path):
    """A run on S3 with the stack's keys and a (fake) model API key in the environment: the
    secret values are nowhere in the release, its state, the report, the Prefect records
    (flow run parameters, logs, artifacts) or the process output."""
    from prefect.settings import PREFECT_API_URL

    from flows.curate import run_curate
    from tests import prefect_api

    api_key = "sk-refinery-test-" + os.urandom(8).hex()
    os.environ["REFINERY_TEST_API_KEY"] = api_key
    secrets = [os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"], api_key]
    write_jsonl(tmp_path / "in" / "docs.jsonl", [{"text": t} for t in _wiki(50)])
    root = "s3://refinery/secrets-test"
    cfg = parse_config({"release": "sec", "output": root, "inputs": [{"uri": str(tmp_path / "in")}],
                        "llm": {"api_key_env": "REFINERY_TEST_API_KEY"}, "quality": {"enabled": True},
                        "storage": {"access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
                                    "secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"]}})
    m = run_curate(cfg.export_secrets_to_env())
    storage = StorageSpec(root).open()
    blobs = [json.dumps(m)]
    for rel in storage.list("", ""):
        blobs.append(storage.read_bytes(rel).decode("utf-8", "replace"))
    api = PREFECT_API_URL.value().rstrip("/")
    run = prefect_api.get(f"{api}/flow_runs/{m['flow_run_id']}", timeout=10).json()
    logs = prefect_api.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [m["flow_run_id"]]}},
                                                  "limit": 200}, timeout=10).json()
    arts = prefect_api.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [m["flow_run_id"]]}}},
                      timeout=10).json()
    blobs += [json.dumps(run), json.dumps(logs), json.dumps(arts)]
    assert len(blobs) > 10
    for secret in secrets:
        assert not any(secret in b for b in blobs), "a secret value leaked into an output"
    assert m["config"]["llm"]["api_key_env"] == "REFINERY_TEST_API_KEY"
    assert "secret_access_key" not in m["config"]["storage"]


def _files_containing(folder: Path, needles: list[str], skip: set[Path] = frozenset()) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path in skip or not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found += [f"{path}: {n[:4]}..." for n in needles if n.encode() in data]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("where", ["environment", "config"])
def test_storage_keys_never_reach_ray_logs_prefect_or_the_corpus(stack, tmp_path, where):
    """`refinery run` on S3 (SeaweedFS) with its keys in the environment or in the pipeline
    file, on a Ray it starts itself: the run publishes, and no file under Ray's temp and
    session folders (runtime-env agent log included), the run's home, the Prefect server's
    database, SeaweedFS's data or the corpus, nor the run's output, holds either key. The scan
    reads Ray's own logs (the raylet's lines are found); the run gave Ray no runtime env, so
    not even the Prefect API URL is in them."""
    import tempfile

    from prefect.settings import PREFECT_API_URL

    key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    write_jsonl(tmp_path / "in" / "docs.jsonl", [{"text": t} for t in _wiki(60)])
    root = f"s3://refinery/creds-{where}"
    cfg: dict = {"release": "creds", "output": root, "inputs": [{"uri": str(tmp_path / "in")}]}
    env = dict(os.environ)
    if where == "config":
        cfg["storage"] = {"access_key_id": key, "secret_access_key": secret}
        env.pop("AWS_ACCESS_KEY_ID")
        env.pop("AWS_SECRET_ACCESS_KEY")
    # a short private folder: Ray's socket paths must stay under the 107-byte limit
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    env["RAY_TMPDIR"] = str(ray_tmp)
    env["REFINERY_HOME"] = str(tmp_path / "home")
    env.pop("RAY_ADDRESS", None)
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(cfg))
    try:
        out = subprocess.run([REFINERY, "run", "-c", str(path)], env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        storage = StorageSpec(root).open()
        m = storage.read_json(layout.manifest_path("creds"))
        verify_release(storage, m)
        assert m["totals"]["documents"] > 0
        agent_logs = list(ray_tmp.rglob("runtime_env_agent.log"))
        assert agent_logs, sorted(str(p) for p in ray_tmp.rglob("*"))[:50]
        assert _files_containing(ray_tmp, ["(raylet)"]), "no Ray log was read: the scan proves nothing"
        # a private local Ray gets no runtime env (its workers inherit the driver's environment:
        # tasks/ray_local.py), so Ray's logs hold none of it, not even the Prefect API URL
        assert not _files_containing(ray_tmp, [PREFECT_API_URL.value()])
        needles = [key, secret]
        leaks = _files_containing(ray_tmp, needles)
        leaks += _files_containing(tmp_path / "home", needles)
        # the stack's own credential store (mode 0600) is where the keys live: everything else
        # under it (the Prefect database, SeaweedFS's data, the logs) must not hold them
        stores = {stack.state_file, stack.env_file, stack.dir / "s3-identities.json"}
        assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in stores)
        leaks += _files_containing(stack.home, needles, skip=stores)
        for rel in storage.list("", ""):
            data = storage.read_bytes(rel)
            leaks += [f"{root}/{rel}" for n in needles if n.encode() in data]
        leaks += [f"run output: {n[:4]}..." for n in needles if n in out.stdout + out.stderr]
        assert leaks == [], leaks
        secrets_dir = tmp_path / "home" / "secrets"  # a local Ray inherits: no credentials file at all
        assert not secrets_dir.exists() or not any(secrets_dir.iterdir())
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_joined_cluster_workers_get_a_path_not_the_keys(tmp_path, monkeypatch):
    """For a Ray cluster that the run joins, the runtime env carries only the path of a file
    readable by this user alone; the worker start hook loads the keys from it; the file goes
    when the runner exits."""
    from tasks import secrets as sec

    monkeypatch.setenv("REFINERY_HOME", str(tmp_path / "home"))
    values = {"AWS_ACCESS_KEY_ID": "AKIA-test-" + os.urandom(4).hex(), "AWS_SECRET_ACCESS_KEY": os.urandom(12).hex()}
    path = sec.write_secrets_file(values)
    assert path and oct(Path(path).stat().st_mode & 0o777) == "0o600"
    assert oct(Path(path).parent.stat().st_mode & 0o777) == "0o700"
    for k in values:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(sec.SECRETS_FILE_ENV, path)
    sec.load_secrets_file()
    assert {k: os.environ[k] for k in values} == values
    sec.remove_secrets_file(path)
    assert not Path(path).exists()
    assert sec.write_secrets_file({}) is None

    from tasks.parallel import RayRunner

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    for needs_storage in (True, False):
        runner = RayRunner(address="ray://head.example:10001", needs_storage=needs_storage)
        runtime_env = runner.worker_runtime_env("http://127.0.0.1:1/api")
        try:
            shown = json.dumps(runtime_env)
            assert not any(v in shown for v in values.values())
            assert ("AWS_ENDPOINT_URL" in runtime_env["env_vars"]) == needs_storage
            if needs_storage:
                stored = json.loads(Path(runtime_env["env_vars"][sec.SECRETS_FILE_ENV]).read_text())
                assert stored == values
                assert runtime_env["worker_process_setup_hook"] == "tasks.secrets.load_secrets_file"
            else:  # a local root: no storage keys leave the driver at all
                assert sec.SECRETS_FILE_ENV not in runtime_env["env_vars"]
        finally:
            runner.forget_secrets()
    assert not any((tmp_path / "home" / "secrets").iterdir())
    local = RayRunner(address="local").worker_runtime_env("http://127.0.0.1:1/api")
    assert sec.SECRETS_FILE_ENV not in local["env_vars"] and not any(v in json.dumps(local) for v in values.values())


@pytest.mark.parametrize("config", [
    {"release": "../escape"}, {"release": "a/b"}, {"inputs": [{"uri": "x", "source": "../../etc"}]},
    {"inputs": [{"uri": "x", "source": "a/b"}]}, {"quality": {"rules": [{"name": "../r", "exclude": "words < 1"}]}},
    {"quality": {"thresholds": [{"name": "a/../b", "attribute": "words", "keep_top_percent": 5}]}},
])
def test_path_traversal_in_config_values_is_rejected(config):
    with pytest.raises(ConfigError, match="no slashes"):
        parse_config(config)


def test_path_traversal_in_partition_names_is_rejected(tmp_path):
    from flows.backfill import BackfillSpec

    for bad in ("../x", "a/b", ".."):
        with pytest.raises(ValueError):
            BackfillSpec(partitions=[bad])


def _stop_service(stack, service: str) -> None:
    """Stop one service of the session's stack (its whole process group)."""
    from flows.stack import terminate

    rec = stack.read_state()["services"][service]
    terminate(rec, 30)
    _wait_for(lambda: not _listening(rec["port"]), timeout=60, step=0.5)


def _start_services(stack) -> None:
    """Start the stopped service again on the same port, with the same data and credentials."""
    state = stack.read_state()
    stack.up(prefect_port=state["services"]["prefect"]["port"], s3_port=state["services"]["s3"]["port"],
             with_s3=True, timeout=180)


def _listening(port: int) -> bool:
    import psutil

    return any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
               for c in psutil.net_connections(kind="tcp"))


def _outcome_then_rerun(cfg: PipelineConfig, box: dict, storage) -> dict:
    """The interrupted run either completed, or failed with nothing published; a rerun then
    completes."""
    from flows.curate import run_curate

    if "error" in box:
        assert not storage.exists(layout.manifest_path(cfg.release)), "a failed run left a manifest"
        return run_curate(cfg)
    return box["manifest"]


def _done_markers(storage, release: str) -> set[str]:
    return {p for p in storage.list(f"state/work/{release}") if p.endswith(".done.json")}


@pytest.mark.slow
@pytest.mark.parametrize("service", ["s3", "prefect"])
def test_server_restarted_mid_run(stack, ray_local, tmp_path, service):
    """SeaweedFS (the run's corpus root is on it) or the Prefect server is stopped while the
    shards are being written and started again. The fault provably struck mid-run: shard tasks
    had finished before it (their markers), the run was still going while the service was
    down, and more shard tasks finished after it. Retries carry the run through, or it fails
    with no manifest and a rerun completes; either way the release equals a clean run's, and
    the flow run is recorded as completed."""
    from prefect.settings import PREFECT_API_URL

    from flows.curate import run_curate
    from tests import prefect_api

    inputs = _inputs(tmp_path)
    quality = {"enabled": True, "language_id": {"enabled": False}}
    release = f"restart-{service}"
    output = "s3://refinery/s3-restart" if service == "s3" else str(tmp_path / "corpus")
    cfg = PipelineConfig(release=release, output=output, inputs=inputs, quality=quality,
                         execution={"max_retries": 4, "retry_delay_seconds": 5})
    storage = StorageSpec(cfg.output).open()
    th, box = _run_in_thread(cfg)
    _wait_for(lambda: any(p.endswith(".done.json") for p in storage.list(f"state/work/{release}/ingest")), step=0.2)
    before = _done_markers(storage, release)
    _stop_service(stack, service)
    try:
        assert th.is_alive(), "the run had ended before the service went down: the fault struck nothing"
        time.sleep(3)
    finally:
        _start_services(stack)
    th.join(900)
    assert not th.is_alive()
    m = _outcome_then_rerun(cfg, box, storage)
    verify_release(storage, m)
    after = _done_markers(storage, release)
    assert before and before < after, "no shard task finished after the fault"
    print(f"{service}: {len(before)} shard markers before the fault, {len(after)} after; "
          f"outcome: {'failed, rerun' if 'error' in box else 'completed'}")
    clean = run_curate(PipelineConfig(release=release, output=str(tmp_path / "clean"), inputs=inputs,
                                      quality=quality))
    assert _checksums(m) == _checksums(clean)
    run = prefect_api.get(f"{PREFECT_API_URL.value().rstrip('/')}/flow_runs/{m['flow_run_id']}", timeout=10).json()
    assert run["state"]["type"] == "COMPLETED"
