"""Deployments served by `refinery serve`: a schedule fires and releases; a refresh after a new
partition lands processes only that partition and removes its near copies of earlier releases."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tasks.ingest import stable_id
from tasks.storage import StorageSpec
from tests.conftest import shared
from tests.corpora import write_jsonl
from tests.releases import verify_release

pytestmark = pytest.mark.slow
REFINERY = str(Path(sys.executable).with_name("refinery"))


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group started with start_new_session (SIGTERM, then SIGKILL)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_for_releases(storage, n: int, proc, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "refinery serve exited"
        catalog = storage.read_json_or_none("catalog.json")
        if catalog and len(catalog["releases"]) >= n:
            return catalog["releases"]
        time.sleep(2)
    raise AssertionError(f"no {n} releases after {timeout:.0f}s")


def test_scheduled_refresh_releases_only_new_partitions(stack, tmp_path):
    rng = random.Random(9)
    wiki = [r for r in pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"))
            .select(["page_id", "text"]).to_pylist() if len(r["text"].split()) >= 120]
    rng.shuffle(wiki)
    day1, fresh = wiki[:200], wiki[200:260]
    write_jsonl(tmp_path / "raw" / "wiki" / "day-1" / "part-0.jsonl", day1)
    root = tmp_path / "corpus"
    cfg = {"name": "wiki-refresh", "output": str(root), "near_dedup": {"partitions": 2},
           "inputs": [{"uri": str(tmp_path / "raw" / "wiki"), "source": "wiki", "columns": {"id": "page_id"}}]}
    cfg_path = tmp_path / "pipeline.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "REFINERY_HOME": str(tmp_path / "home")}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the server writes to it until killed
    proc = subprocess.Popen([REFINERY, "serve", "--config", str(cfg_path), "--interval", "10", "--shared-ray"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    storage = StorageSpec(str(root)).open()
    try:
        first = _wait_for_releases(storage, 1, proc)[0]
        m1 = storage.read_json(first["manifest"])
        verify_release(storage, m1)
        assert all("/day-1/" in i["uri"] for i in m1["inputs"])

        def edit(text: str) -> str:
            words = text.split()
            for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
                words[i] = "changed"
            return " ".join(words)

        copies = [{"page_id": f"copy-{r['page_id']}", "text": edit(r["text"]), "of": r["page_id"]} for r in day1[:30]]
        write_jsonl(tmp_path / "raw" / "wiki" / "day-2" / "part-0.jsonl", copies + fresh)
        releases = _wait_for_releases(storage, 2, proc)
    finally:
        _stop(proc)
        log.close()
    m2 = storage.read_json(releases[1]["manifest"])
    verify_release(storage, m2)
    # both flow runs (two subprocesses of serve) joined the one Ray that serve started (--shared-ray)
    said = [ln for ln in (tmp_path / "serve.log").read_text().splitlines() if "Ray for this serve process's runs at" in ln]
    assert len(said) == 1, said
    serve_ray = said[0].rsplit(" ", 1)[1]
    assert m1["cluster"]["ray_address"] == m2["cluster"]["ray_address"] == serve_ray
    assert m2["parent"] == m1["release"]
    assert [i["uri"] for i in m2["inputs"]] == [str(tmp_path / "raw" / "wiki" / "day-2" / "part-0.jsonl")]
    assert m2["config"]["inputs"][0]["source"] == "wiki"
    rejects = pa.concat_tables([storage.read_parquet(f["path"]) for f in m2["outputs"]["rejects"]
                                if "/near_dedup/" in f["path"]])
    dropped = dict(zip(rejects.column("id").to_pylist(), rejects.column("detail").to_pylist(), strict=True))
    caught = [c for c in copies if stable_id("wiki", c["page_id"], "") in dropped]
    assert len(caught) >= 0.85 * len(copies)
    assert all(d.endswith(f"in release {m1['release']}") for d in dropped.values())
    # the scheduled runs after that found nothing new: still two releases
    assert len(json.loads((root / "catalog.json").read_text())["releases"]) == 2


def test_backfill_three_partitions_with_bounded_concurrency(stack, ray_local, tmp_path):
    """Three partitions, limit 2: the backfill's own thread pool is wider than the limit, so only
    the pipeline's Prefect global concurrency limit can hold them to two at once; the flow runs'
    times on the Prefect server show that two did run at once and that three never did. A test
    stage (tests/e2e/gate_stage.py) holds each admitted run until two have reached it, so the
    overlap does not depend on how long a run takes on this machine."""
    from datetime import datetime

    import ray.cloudpickle
    from prefect.settings import PREFECT_API_URL

    from flows.backfill import MAX_THREADS, BackfillSpec, backfill, limit_name
    from tasks import registry
    from tasks.config import InputSpec, PipelineConfig
    from tests import prefect_api
    from tests.e2e import gate_stage

    wiki = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).select(["page_id", "text"]).to_pylist()
    for k, day in enumerate(["day-1", "day-2", "day-3", "day-4"]):
        write_jsonl(tmp_path / "raw" / day / "part-0.jsonl", wiki[k * 200:(k + 1) * 200])
    root = str(tmp_path / "corpus")
    ray.cloudpickle.register_pickle_by_value(gate_stage)  # Ray workers need not import the tests
    registry.register(gate_stage.STAGE)
    try:
        cfg = PipelineConfig(name="bf-test", output=root, inputs=[InputSpec(uri=str(tmp_path / "raw"), source="wiki",
                                                                            columns={"id": "page_id"})],
                             stages=["ingest", "exact_dedup", gate_stage.NAME])
        assert MAX_THREADS > 2
        ids = backfill(config=cfg, spec=BackfillSpec(start="day-1", end="day-3", max_concurrent=2,
                                                     release_prefix="bf"))
        assert sorted(ids) == ["bf-day-1", "bf-day-2", "bf-day-3"]
        assert sorted(p.name for p in (tmp_path / "gate").iterdir()) == ids  # every run passed the gate
        storage = StorageSpec(root).open()
        api = PREFECT_API_URL.value().rstrip("/")
        spans = []
        for rid in ids:
            m = storage.read_json(f"releases/{rid}/manifest.json")
            verify_release(storage, m)
            assert m["stages"] == cfg.stages
            day = rid.removeprefix("bf-")
            assert [i["uri"] for i in m["inputs"]] == [str(tmp_path / "raw" / day / "part-0.jsonl")]
            run = prefect_api.get(f"{api}/flow_runs/{m['flow_run_id']}", timeout=10).raise_for_status().json()
            assert run["state"]["type"] == "COMPLETED"
            spans.append((datetime.fromisoformat(run["start_time"]), datetime.fromisoformat(run["end_time"])))
        print("flow runs (start, end):", [(s.isoformat(), e.isoformat()) for s, e in spans])
        # the most flow runs running at any one start: exactly the limit
        at_once = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
        assert at_once == 2, spans
        limit = prefect_api.get(f"{api}/v2/concurrency_limits/{limit_name(cfg)}", timeout=10).raise_for_status().json()
        assert limit_name(cfg) == "refinery-backfill-bf-test"
        assert limit["limit"] == 2 and limit["active_slots"] == 0

        single = backfill(config=cfg, spec=BackfillSpec(partitions=["day-2", "day-4"], mode="single",
                                                        release_prefix="all"))
        m = storage.read_json(f"releases/{single[0]}/manifest.json")
        assert single == ["all-day-2-day-4"]
        assert [i["uri"].rsplit("/", 2)[1] for i in m["inputs"]] == ["day-2", "day-4"]
    finally:
        registry.unregister(gate_stage.NAME)


def _wait_for_ray_nodes(address: str, count: int, env: dict[str, str], timeout: float = 300) -> None:
    """Until the cluster at ``address`` has ``count`` live nodes (asked of its GCS by a short
    driver, as often as it takes: a loaded machine starts nodes slowly)."""
    ask = (f"import ray; ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False); "
           "print(sum(1 for n in ray.nodes() if n['Alive']))")
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", ask], env=env, capture_output=True, text=True, timeout=120)
        seen = out.stdout.strip().splitlines()[-1:] or out.stderr[-300:]
        if out.returncode == 0 and seen == [str(count)]:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster at {address} did not reach {count} live node(s) in {timeout:.0f}s: {seen}")


def test_two_node_ray_cluster_spreads_shards_and_publishes_the_same_release(stack, tmp_path):
    """A real two-node Ray cluster on this machine (head + a second node joining it): the run
    given its address spreads shard tasks over both nodes and publishes what a local run does."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = str(Path(sys.executable).with_name("ray"))
    # Ray 2.60 turns on token auth for `ray start` clusters; this loopback-only test cluster
    # runs without it (the variable is set for the cluster's and the run's processes only).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "REFINERY_HOME": str(tmp_path / "home")}
    common = ["--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1", "--block"]
    nodes = [subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard=false",
                               *common], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for_ray_nodes(f"127.0.0.1:{port}", 1, env)
        nodes.append(subprocess.Popen([ray_bin, "start", "--address", f"127.0.0.1:{port}", *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for_ray_nodes(f"127.0.0.1:{port}", 2, env)
        args = ["-i", str(shared("cc_web_samples/cc_web_samples.parquet")),
                "-i", str(shared("simple_wikipedia/simple_wikipedia.parquet")), "--release", "two"]
        cfg = tmp_path / "p.yaml"
        cfg.write_text(yaml.safe_dump({"execution": {"shard_rows": 2000}}))
        runs = {}
        for name, extra in (("cluster", ["--ray-address", f"127.0.0.1:{port}"]), ("local", [])):
            out = subprocess.run([REFINERY, "run", "-c", str(cfg), "-o", str(tmp_path / name), *args, *extra],
                                 env=env, capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, out.stderr[-3000:]
            runs[name] = StorageSpec(str(tmp_path / name)).open()
    finally:
        for proc in reversed(nodes):
            _stop(proc)
    cluster, local = runs["cluster"], runs["local"]
    mc, ml = cluster.read_json("releases/two/manifest.json"), local.read_json("releases/two/manifest.json")
    assert mc["cluster"]["ray_nodes"] == 2 and ml["cluster"]["ray_address"] != mc["cluster"]["ray_address"]
    used = {cluster.read_json(f)["node"] for f in cluster.list("state/work/two", ".done.json")}
    assert len(used) == 2, used
    assert mc["funnel"] == ml["funnel"] and mc["totals"] == ml["totals"]

    def docs(storage, m):
        t = pa.concat_tables([storage.read_parquet(f["path"]).select(["id", "text"]) for f in m["outputs"]["documents"]])
        return sorted(zip(t.column("id").to_pylist(), t.column("text").to_pylist(), strict=True))

    assert docs(cluster, mc) == docs(local, ml)


def _deployment_id(api: str, flow: str, name: str, proc, timeout: float = 180) -> str:
    """Wait until *this* pipeline's deployment is registered (never another test's)."""
    from tests import prefect_api

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "refinery serve exited"
        resp = prefect_api.get(f"{api}/deployments/name/{flow}/{name}", timeout=10)
        if resp.status_code == 200:
            return resp.json()["id"]
        time.sleep(1)
    raise AssertionError(f"deployment {flow}/{name} not registered after {timeout:.0f}s")


def _custom_run_in_browser(page, ui: str, deployment_id: str, release: str, num_perm: int, shot: Path) -> None:
    """Open the deployment's page in the Prefect UI and start a custom run with two changed fields."""
    page.goto(f"{ui}/deployments/deployment/{deployment_id}", wait_until="networkidle")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).first.click()
    page.wait_for_load_state("networkidle")

    def prop(title: str):  # the innermost form property labelled with a pydantic title
        label = page.locator("span.schema-form-property__label", has_text=title)
        return page.locator("div.schema-form-property", has=label).last

    field = prop("Release id")
    field.get_by_role("button", name="str", exact=True).click()  # Optional[str]: pick "str"
    field.locator("textarea, input").first.fill(release)
    prop("MinHash permutations").locator("input, textarea").first.fill(str(num_perm))
    # the form (rendered by now) never offers storage keys: Prefect keeps what is typed there in clear text
    labels = [t.strip().lower() for t in page.locator("span.schema-form-property__label").all_inner_texts()]
    assert {"scratch compression (optional)", "s3 endpoint url (optional)"} <= set(labels), labels
    assert not [t for t in labels if "access key" in t], labels
    page.screenshot(path=str(shot), full_page=True)
    # the create call's own answer: a refused run fails here with the server's reason
    with page.expect_response(lambda r: r.url.endswith("/create_flow_run") and r.request.method == "POST",
                              timeout=60_000) as created:
        page.get_by_role("button", name="Submit").click()
    assert created.value.status in (200, 201), f"{created.value.status}: {created.value.text()[:500]}"
    # after a submit the UI returns to the deployment (a toast links the new run)
    page.wait_for_url(lambda url: "/run?" not in url and url.rstrip("/").split("?")[0].count("/run") == 0,
                      timeout=60_000)


def _keys_in_parameters_are_refused(api: str, deployment_id: str, procs: dict, server_log: Path,
                                    serve_log: Path) -> None:
    """Storage keys sent in a served run's parameters: the server refuses them where the
    deployment's schema is enforced (a run from the deployment, as the UI's form sends it). Where
    a caller switches the check off or creates the run around it (POST /flow_runs with the
    deployment's id): a run that starts is failed by the flow before any work, its keys removed
    from the server's record; a run that fails Prefect's own parameter check, or never starts,
    has them removed by `refinery serve`'s sweep; no log holds them."""
    from flows.param_secrets import MARKER
    from tests import prefect_api

    key, secret = "AKIATEST" + os.urandom(4).hex().upper(), "sEcReT-" + os.urandom(12).hex()
    dep = prefect_api.get(f"{api}/deployments/{deployment_id}", timeout=10).json()
    cfg = json.loads(json.dumps(dep["parameters"]["config"]))
    cfg["release"] = "keys-in-parameters"
    cfg["storage"].update(access_key_id=key, secret_access_key=secret)
    resp = prefect_api.post(f"{api}/deployments/{deployment_id}/create_flow_run", json={"parameters": {"config": cfg}},
                      timeout=30)
    assert resp.status_code in (409, 422), resp.text[:300]
    assert secret not in resp.text

    def stored(body: dict, url: str = f"{api}/flow_runs/") -> str:
        resp = prefect_api.post(url, timeout=30, json=body)
        assert resp.status_code in (200, 201), resp.text[:300]
        assert resp.json()["parameters"]["config"]["storage"]["secret_access_key"] == secret  # stored as sent
        return resp.json()["id"]

    def finished(run_id: str) -> dict:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert all(pr.poll() is None for pr in procs.values()), "refinery serve exited"
            run = prefect_api.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            time.sleep(1)
        raise AssertionError(f"flow run {run_id} did not finish")

    # the schema check switched off, a run parked for tomorrow: it never starts
    tomorrow = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    parked = stored({"parameters": {"config": cfg}, "enforce_parameter_schema": False,
                     "state": {"type": "SCHEDULED", "name": "Scheduled", "state_details": {"scheduled_time": tomorrow}}},
                    f"{api}/deployments/{deployment_id}/create_flow_run")
    around = {"flow_id": dep["flow_id"], "deployment_id": deployment_id, "state": {"type": "SCHEDULED", "name": "Scheduled"}}
    refused = finished(stored({**around, "parameters": {"config": cfg}}))
    assert refused["state"]["type"] == "FAILED", refused["state"]
    assert "storage keys came in this flow's config parameter" in refused["state"]["message"]
    assert "were removed from flow run" in refused["state"]["message"]
    assert refused["parameters"]["config"]["storage"]["secret_access_key"] == MARKER
    # a run whose parameters also fail Prefect's own check never reaches the flow body
    invalid = finished(stored({**around, "parameters": {"config": {**cfg, "release": "../up"}}}))
    assert invalid["state"]["type"] == "FAILED" and "storage keys" not in invalid["state"]["message"]
    deadline, left = time.monotonic() + 120, {parked, invalid["id"]}
    while left and time.monotonic() < deadline:  # serve sweeps its deployments' runs every 30 s
        time.sleep(2)
        left = {r for r in left if prefect_api.get(
            f"{api}/flow_runs/{r}", timeout=10).json()["parameters"]["config"]["storage"]["secret_access_key"] != MARKER}
    assert not left, f"flow runs still holding storage keys: {left}"
    logs, deadline = "", time.monotonic() + 60
    while "storage keys came" not in logs and time.monotonic() < deadline:  # logs arrive in batches, after the state
        time.sleep(1)
        logs = prefect_api.post(f"{api}/logs/filter", timeout=10, json={
            "logs": {"flow_run_id": {"any_": [refused["id"], invalid["id"]]}}, "limit": 200}).text
    assert "storage keys came" in logs and secret not in logs and key not in logs
    for run_id in (parked, refused["id"], invalid["id"]):
        assert secret not in prefect_api.get(f"{api}/flow_runs/{run_id}", timeout=10).text
    assert "Parameter validation failed for flow 'curate'" in serve_log.read_text(errors="replace")
    for path in (server_log, serve_log):  # neither the refused requests nor the failed validation logged them
        assert secret not in path.read_text(errors="replace") and key not in path.read_text(errors="replace")


def test_two_pipelines_on_one_server_each_run_from_the_ui_lands_in_its_own_root(stack, tmp_path, artifacts):
    """Two pipelines served at once on one Prefect server: each registers its own deployments
    (`curate/<name>`), and a custom run started in headless Chromium from each one's page is
    published into that pipeline's root only, with the parameters changed in the form (which
    offers no storage keys). Then storage keys sent in a run's parameters are refused."""
    from playwright.sync_api import sync_playwright
    from prefect.settings import PREFECT_API_URL

    from tests import prefect_api

    wiki = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).select(["page_id", "text"])
    api = PREFECT_API_URL.value().rstrip("/")
    ui = api.removesuffix("/api")
    pipelines = {"wiki-a": wiki.slice(0, 120), "wiki-b": wiki.slice(120, 100)}
    procs, logs, roots = {}, [], {}
    try:
        for name, rows in pipelines.items():
            write_jsonl(tmp_path / name / "raw" / "day-1" / "part-0.jsonl", rows.to_pylist())
            roots[name] = tmp_path / name / "corpus"
            cfg_path = tmp_path / name / "pipeline.yaml"
            cfg_path.write_text(yaml.safe_dump({"name": name, "output": str(roots[name]), "inputs": [
                {"uri": str(tmp_path / name / "raw"), "source": "wiki", "columns": {"id": "page_id"}}]}))
            env = {**os.environ, "REFINERY_HOME": str(tmp_path / name / "home")}
            log = open(tmp_path / name / "serve.log", "wb")  # noqa: SIM115 - written until the server stops
            logs.append(log)
            procs[name] = subprocess.Popen([REFINERY, "serve", "--config", str(cfg_path), "--cron", "0 0 1 1 *"],
                                           env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ids = {name: _deployment_id(api, "curate", name, procs[name]) for name in pipelines}
        assert len(set(ids.values())) == 2
        for name in pipelines:  # each deployment keeps its own pipeline's defaults
            dep = prefect_api.get(f"{api}/deployments/{ids[name]}", timeout=10).json()
            assert dep["parameters"]["config"]["output"] == str(roots[name])
            assert f"pipeline:{name}" in dep["tags"]
        runs = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # one after the other: two Ray clusters at once on 2 cores only make both slow
            for k, name in enumerate(pipelines):
                release, perm = f"ui-{name}", 128 + 16 * k
                _custom_run_in_browser(page, ui, ids[name], release, perm, artifacts / f"prefect-custom-run-{name}.png")
                storage = StorageSpec(str(roots[name])).open()
                deadline = time.monotonic() + 400
                while time.monotonic() < deadline and not storage.exists(f"releases/{release}/manifest.json"):
                    assert all(pr.poll() is None for pr in procs.values()), "refinery serve exited"
                    time.sleep(2)
                run_id = storage.read_json(f"releases/{release}/manifest.json")["flow_run_id"]
                while time.monotonic() < deadline:  # the run finishes after its manifest (artifacts)
                    run = prefect_api.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
                    if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                        break
                    time.sleep(1)
                runs[name] = (release, perm, run)
            browser.close()
        _keys_in_parameters_are_refused(api, ids["wiki-a"], procs, stack.dir / "prefect.log",
                                        tmp_path / "wiki-a" / "serve.log")
    finally:
        for proc in procs.values():
            _stop(proc)
        for log in logs:
            log.close()
    for name, (release, perm, run) in runs.items():
        storage = StorageSpec(str(roots[name])).open()
        m = storage.read_json(f"releases/{release}/manifest.json")
        verify_release(storage, m)
        assert m["config"]["name"] == name
        assert m["config"]["near_dedup"]["num_perm"] == perm
        assert m["dedup"]["near"]["parameters"]["num_perm"] == perm
        assert run["state"]["type"] == "COMPLETED" and run["deployment_id"] == ids[name]
        # the run landed only in its own pipeline's root
        other = next(n for n in pipelines if n != name)
        assert not (roots[other] / "releases" / release).exists()
        assert [r["id"] for r in json.loads((roots[name] / "catalog.json").read_text())["releases"]] == [release]


def test_serve_requires_a_pipeline_name(tmp_path):
    cfg_path = tmp_path / "pipeline.yaml"
    cfg_path.write_text(yaml.safe_dump({"output": str(tmp_path / "corpus")}))
    out = subprocess.run([REFINERY, "serve", "--config", str(cfg_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "`name` is required by `refinery serve`" in out.stderr and str(cfg_path) in out.stderr
