"""`refinery explain`, `refinery export dolma` and the HTML report, on real releases."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from tasks.config import InputSpec, PipelineConfig
from tasks.ingest import stable_id
from tasks.storage import StorageSpec
from tests.conftest import shared
from tests.corpora import write_jsonl

pytestmark = pytest.mark.slow
REFINERY = str(Path(sys.executable).with_name("refinery"))


@pytest.fixture(scope="module")
def release(stack, ray_local, tmp_path_factory):
    """cc_web_samples, plus an exact copy and an edited (near) copy of two of its pages."""
    from flows.curate import run_curate

    tmp = tmp_path_factory.mktemp("explain")
    web = pq.read_table(shared("cc_web_samples/cc_web_samples.parquet")).select(["id", "text"]).to_pylist()
    long_pages = [r for r in web if len(r["text"].split()) > 400]
    exact_of, near_of = long_pages[0], long_pages[1]
    words = near_of["text"].split()
    words[len(words) // 2] = "EDITED"
    extra = [{"id": "exact-copy", "text": exact_of["text"]}, {"id": "near-copy", "text": " ".join(words)}]
    write_jsonl(tmp / "extra" / "copies.jsonl", extra)
    root = str(tmp / "corpus")
    cfg = PipelineConfig(release="rel-x", output=root, inputs=[
        InputSpec(uri=str(shared("cc_web_samples/cc_web_samples.parquet")), source="web", columns={"id": "id"}),
        InputSpec(uri=str(tmp / "extra"), source="web", columns={"id": "id"})])
    manifest = run_curate(cfg)
    return {"root": root, "manifest": manifest, "tmp": tmp,
            "exact": (stable_id("web", "exact-copy", ""), stable_id("web", exact_of["id"], "")),
            "near": (stable_id("web", "near-copy", ""), stable_id("web", near_of["id"], ""))}


def _explain(root: str, doc_id: str) -> dict:
    out = subprocess.run([REFINERY, "explain", f"{root}/releases/rel-x", "--id", doc_id, "--json"],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_explain_dropped_duplicated_and_published(release):
    copy_id, original_id = release["exact"]
    r = _explain(release["root"], copy_id)["here"]
    assert r["status"] == "dropped" and r["stage"] == "exact_dedup" and r["reason"] == "exact duplicate"
    assert r["duplicate_of"]["id"] == original_id and r["duplicate_of"]["status"] == "published"
    assert r["stages"] == ["ingest", "exact_dedup"]
    assert r["input"]["row"] == 0 and r["input"]["uri"].endswith(".jsonl")

    copy_id, original_id = release["near"]
    r = _explain(release["root"], copy_id)["here"]
    assert r["status"] == "dropped" and r["stage"] == "near_dedup"
    assert r["duplicate_of"]["id"] == original_id
    assert "EDITED" in r["text"] and "EDITED" not in r["duplicate_of"]["text"]

    r = _explain(release["root"], original_id)["here"]
    assert r["status"] == "published" and r["changed_by"] == []
    assert "near_dedup__minhash__cluster_size" in r["attributes"]
    assert r["attributes"]["near_dedup__minhash__cluster_size"][0]["score"] == 2.0

    missing = subprocess.run([REFINERY, "explain", release["root"], "--id", "no-such-id"], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 4 and "not seen by this release" in missing.stdout


def test_dolma_export_round_trips(release):
    out = release["tmp"] / "dolma"
    run = subprocess.run([REFINERY, "export", "dolma", f"{release['root']}/releases/rel-x", "--to", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    storage = StorageSpec(release["root"]).open()
    manifest = release["manifest"]
    for f in manifest["outputs"]["documents"]:
        rel = f["path"].split("/documents/", 1)[1].replace(".parquet", ".jsonl.gz")
        docs = [json.loads(line) for line in gzip.decompress((out / "documents" / rel).read_bytes()).splitlines()]
        table = storage.read_parquet(f["path"])
        ours = table.column("id").to_pylist()
        # Dolma's id is the source's own id where the input had one (all rows here)
        assert [d["id"] for d in docs] == table.column("source_id").to_pylist() and None not in ours
        assert [d["text"] for d in docs] == table.column("text").to_pylist()
        for tagger in ("ingest", "exact_dedup", "near_dedup"):
            attrs = [json.loads(line) for line in
                     gzip.decompress((out / "attributes" / tagger / rel).read_bytes()).splitlines()]
            assert [a["id"] for a in attrs] == [d["id"] for d in docs]  # row-aligned
            source = storage.read_parquet(f["path"].replace("/documents/", f"/attributes/{tagger}/"))
            by_id = {r["id"]: r for r in source.to_pylist()}
            for a, our_id in zip(attrs, ours, strict=True):
                for name, spans in a["attributes"].items():
                    value = by_id[our_id][name]
                    if isinstance(value, list):
                        assert spans == [[s["start"], s["end"], s["score"]] for s in value]
                    else:
                        assert spans[0][2] == value


def test_release_loads_with_pyarrow_dataset_and_datasets_offline(release):
    docs_dir = Path(release["root"]) / "releases" / "rel-x" / "documents"
    table = ds.dataset(str(docs_dir), format="parquet").to_table()
    assert table.num_rows == release["manifest"]["totals"]["documents"]
    code = (
        "import datasets, sys; d = datasets.load_dataset('parquet', data_files=sys.argv[1], split='train'); "
        "print(len(d), d.column_names)"
    )
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(release["tmp"] / "hf")}
    out = subprocess.run([sys.executable, "-c", code, f"{docs_dir}/*/*.parquet"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    n, cols = out.stdout.strip().split(" ", 1)
    assert int(n) == table.num_rows
    assert "id" in cols and "text" in cols


@pytest.fixture(scope="module")
def child(release):
    """rel-y: the same pages again, through quality (with a top-X% threshold) and ProX."""
    from flows.curate import run_curate

    cfg = PipelineConfig(release="rel-y", output=release["root"], inputs=[
        InputSpec(uri=str(shared("cc_web_samples/cc_web_samples.parquet")), source="web", columns={"id": "id"})],
        near_dedup={"cross_release": False},  # so that the documents reach the later stages
        quality={"enabled": True, "thresholds": [{"name": "top-lid", "attribute": "quality__lid__score",
                                                  "keep_top_percent": 80}]},
        prox={"enabled": True})
    return run_curate(cfg)


def test_explain_shows_how_a_modified_document_changed(release, child):
    from tests.releases import verify_release

    storage = StorageSpec(release["root"]).open()
    verify_release(storage, child)
    changes = [f["path"] for f in child["outputs"]["changes"] if "/changes/prox/" in f["path"]]
    before = storage.read_parquet(changes[0]).to_pylist()[0]
    out = subprocess.run([REFINERY, "explain", f"{release['root']}/releases/rel-y", "--id", before["id"], "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    here = json.loads(out.stdout)["here"]
    assert here["status"] == "published" and here["changed_by"] == ["prox"]
    (change,) = here["changes"]
    assert change["before"] == before["text"] and change["after"] == here["text"] != before["text"]
    removed = [d[1:] for d in change["diff"] if d.startswith("-") and not d.startswith("---")]
    assert removed and all(line in before["text"] for line in removed)
    assert "prox__program__chunks" in here["attributes"]
    text = subprocess.run([REFINERY, "explain", f"{release['root']}/releases/rel-y", "--id", before["id"]],
                          capture_output=True, text=True, timeout=120).stdout
    assert "changed: prox" in text and "diff of prox" in text


def test_report_renders_in_chromium_with_the_manifests_numbers(release, child, artifacts):
    """A child release (same inputs again, with the quality and ProX stages) gives a report
    with drift, quality charts, ProX figures and sample diffs; headless Chromium loads it from
    disk with no network and no console error."""
    from playwright.sync_api import sync_playwright

    m = child
    assert m["parent"] == "rel-x" and m["drift"]["parent"] == "rel-x"
    page_path = Path(release["root"]) / "releases" / "rel-y" / "report.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors, requests = [], []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda req: requests.append(req.url))
        page.goto(page_path.as_uri())
        page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        hists = [f"chart-hist-{name}" for name in m["quality"]["histograms"]]
        for chart in ("chart-funnel", "chart-drops", "chart-lengths", "chart-clusters", "chart-scurve",
                      "chart-quality-rules", *hists):
            assert page.locator(f"svg#{chart}").count() == 1, chart
        lid = m["quality"]["histograms"]["quality__lid__score"]
        assert page.locator("svg#chart-hist-quality__lid__score rect").evaluate_all(
            "rs => rs.map(r => Number(r.dataset.value))") == lid["counts"]
        marks = page.locator("svg#chart-hist-quality__lid__score line.mark-line").evaluate_all(
            "ls => Object.fromEntries(ls.map(l => [l.dataset.label, Number(l.dataset.value)]))")
        assert marks == {"top-lid": m["quality"]["thresholds"][0]["value"], "language": 0.65}
        prox_rows = page.locator("table#prox-ops tr").all_inner_texts()[1:]
        assert {r.split("\t")[0]: int(r.split("\t")[1].replace(",", "")) for r in prox_rows} == m["prox"]["ops"]
        assert page.locator("#prox-summary").inner_text().count(f"{m['prox']['programs_run']:,} programs") == 1
        samples = page.locator("div.sample")
        assert samples.count() == len(m["samples"]) > 0
        assert page.locator("div.sample del").count() > 0
        rule_rows = page.locator("table#quality-rules tr").all_inner_texts()[1:]
        assert {r.split("\t")[0]: int(r.split("\t")[1].replace(",", "")) for r in rule_rows} == m["quality"]["rules"]
        bars = page.locator("svg#chart-funnel rect").evaluate_all("rs => rs.map(r => Number(r.dataset.value))")
        assert bars == [st["docs_out"] for st in m["funnel"]]
        rows = page.locator("table#funnel tr").all_inner_texts()[1:]
        for st, row in zip(m["funnel"], rows, strict=True):
            cells = row.split("\t")
            assert cells[0] == st["stage"]
            assert int(cells[1].replace(",", "")) == st["docs_in"] and int(cells[2].replace(",", "")) == st["docs_out"]
        lengths = page.locator("svg#chart-lengths rect").evaluate_all("rs => rs.map(r => Number(r.dataset.value))")
        assert lengths == [sum(s["length_histogram"][i] for s in m["sources"].values())
                           for i in range(len(m["length_bins"]))]
        total = page.locator("table#totals td").first.inner_text()
        assert int(total.replace(",", "")) == m["totals"]["documents"]
        near_text = page.locator("#near-summary").inner_text()
        assert f"{m['dedup']['near']['duplicates']:,} near duplicates" in near_text
        assert page.locator("h2", has_text="Drift against parent rel-x").count() == 1
        drift_rows = page.locator("table#drift tr").all_inner_texts()
        assert drift_rows[1].split("\t") == ["documents", f"{m['drift']['documents']['parent']:,}",
                                             f"{m['drift']['documents']['this']:,}"]
        browser.close()
    assert errors == []
    assert all(u.startswith("file://") for u in requests), requests


def test_metrics_exporter_serves_what_the_grafana_panels_query(release):
    import re
    import socket
    import time
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from tasks.metrics import metric_names

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([REFINERY, "metrics", "serve", release["root"], "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = None
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body is not None
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    samples = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            samples.setdefault(s.name, []).append(s)
    m = release["manifest"]
    docs = [s.value for s in samples["refinery_release_documents"] if s.labels["release"] == "rel-x"]
    assert docs == [m["totals"]["documents"]]
    outs = {s.labels["stage"]: s.value for s in samples["refinery_stage_documents_out_total"]
            if s.labels["release"] == "rel-x"}
    assert outs == {st["stage"]: st["docs_out"] for st in m["funnel"]}

    dashboards = list((Path(__file__).resolve().parents[1] / "dashboards" / "grafana").glob("*.json"))
    assert dashboards
    exported = metric_names()
    for path in dashboards:
        dash = json.loads(path.read_text())
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
        queried = {n for e in exprs for n in re.findall(r"\b(refinery_[a-z_]+)\b", e)}
        assert queried and queried <= exported, (path.name, queried - exported)
        assert queried <= set(samples), queried - set(samples)


def _serve_metrics(root: str) -> tuple[subprocess.Popen, int]:
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([REFINERY, "metrics", "serve", root, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("refinery metrics serve did not come up")


@pytest.mark.slow
def test_every_grafana_query_returns_series_through_a_real_prometheus(release, tmp_path):
    """Debian's Prometheus scrapes `refinery metrics serve`; every PromQL query of every panel
    (with the dashboard's `$release` variable set to the release) and the variable's own
    `label_values` query return at least one series through Prometheus's HTTP API."""
    import re
    import shutil
    import socket
    import time

    import httpx

    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus is not installed (scripts/test.sh installs it)"
    exporter, port = _serve_metrics(release["root"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        prom_port = sock.getsockname()[1]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "refinery", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - written until Prometheus stops
    prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    try:
        deadline = time.monotonic() + 120
        up = []
        while time.monotonic() < deadline:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                up = httpx.get(f"{api}/query", params={"query": 'up{job="refinery"} == 1'}, timeout=5).json()
                if up["data"]["result"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        assert up and up["data"]["result"], "Prometheus never scraped the exporter"
        dashboards = list((Path(__file__).resolve().parents[1] / "dashboards" / "grafana").glob("*.json"))
        assert dashboards
        checked = 0
        for path in dashboards:
            dash = json.loads(path.read_text())
            for var in dash["templating"]["list"]:
                if var["type"] != "query":
                    continue
                metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"]).groups()
                values = httpx.get(f"{api}/label/{label}/values", params={"match[]": metric}, timeout=10).json()
                assert "rel-x" in values["data"], (path.name, var["query"], values)
            for panel in dash["panels"]:
                for target in panel["targets"]:
                    expr = target["expr"].replace("$release", "rel-x")
                    res = httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()
                    assert res["status"] == "success", (panel["title"], expr, res)
                    assert res["data"]["result"], f"{path.name}: panel {panel['title']!r}: {expr} returned no series"
                    checked += 1
        assert checked >= 10
    finally:
        prom.terminate()
        exporter.terminate()
        prom.wait(timeout=30)
        exporter.wait(timeout=30)
        log.close()
