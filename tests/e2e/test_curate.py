"""The curate flow end to end: real Prefect server, real Ray, local folders and SeaweedFS S3,
real shared corpora with injected exact copies."""

from __future__ import annotations

import collections
import json
import os

import pyarrow as pa
import pytest

from tasks import layout
from tasks.config import InputSpec, PipelineConfig
from tasks.ingest import stable_id
from tasks.storage import StorageSpec
from tests.conftest import shared
from tests.corpora import first_occurrence, inject_copies, shared_rows, shared_specs, write_jsonl
from tests.releases import expected_task_runs, file_states, prefect_runs, verify_release

pytestmark = pytest.mark.slow


def _run(cfg: PipelineConfig) -> dict:
    from flows.curate import run_curate

    return run_curate(cfg)


def _config(output: str, inputs: list[InputSpec], release: str, **extra) -> PipelineConfig:
    return PipelineConfig(release=release, output=output, inputs=inputs, exact_dedup={"buckets": 3}, **extra)


def _ids(storage, files) -> set[str]:
    out: set[str] = set()
    for f in files:
        out |= set(storage.read_parquet(f["path"], columns=["id"]).column("id").to_pylist())
    return out


def _check_injected(storage, manifest, copies):
    rows = shared_rows() + [{"source": "injected", "id": c["doc_id"], "text": c["body"]} for c in copies]
    first = first_occurrence(rows)
    firsts = {stable_id(s, i, "") for s, i in first.values()}
    exact_rejects = pa.concat_tables(
        [storage.read_parquet(f["path"]) for f in manifest["outputs"]["rejects"] if "/exact_dedup/" in f["path"]]
    )
    survivor_of = dict(zip(exact_rejects.column("id").to_pylist(), exact_rejects.column("survivor_id").to_pylist(),
                           strict=True))
    published = _ids(storage, manifest["outputs"]["documents"])
    near_dropped = _ids(storage, [f for f in manifest["outputs"]["rejects"] if "/near_dedup/" in f["path"]])
    for c in copies:
        cid = stable_id("injected", c["doc_id"], "")
        assert cid not in published
        assert survivor_of[cid] in firsts
        # the survivor is published, or was itself removed later as a near duplicate
        assert survivor_of[cid] in published | near_dropped
    # exact dedup keeps exactly the first occurrence of every distinct content
    assert published | near_dropped == firsts
    assert not published & near_dropped


def _check_prefect(manifest, shards, failed=0):
    from tests.releases import prefect_artifacts

    arts = prefect_artifacts(manifest["flow_run_id"])
    key = manifest["release"].lower().replace("_", "-").replace(".", "-")
    funnel = arts[f"funnel-{key}"]
    assert funnel["type"] == "table"
    rows = json.loads(funnel["data"]) if isinstance(funnel["data"], str) else funnel["data"]
    assert [r["docs out"] for r in rows] == [st["docs_out"] for st in manifest["funnel"]]
    # Prefect stores a link artifact as markdown: [text](url)
    assert f"releases/{manifest['release']}/report.html)" in arts[f"report-{key}"]["data"]
    assert arts[f"progress-{key}"]["type"] == "progress" and float(arts[f"progress-{key}"]["data"]) == 100.0
    flow_run, task_runs = prefect_runs(manifest["flow_run_id"])
    assert flow_run["state"]["type"] == "COMPLETED"
    by_stage = collections.Counter(t["name"].rsplit("-", 1)[0] for t in task_runs)
    assert by_stage == expected_task_runs(manifest, shards, failed)
    # a file that cannot be read fails the task run that read it: its own, or its group's
    # (`ingest-00001..00003`, tasks/grouping.py), which fails once for all its bad files
    bad = {f["shard"] for f in manifest["failures"]}
    assert len(bad) == failed

    def read_bad(name: str) -> bool:
        label, _, part = name.rpartition("-")
        first, _, last = part.partition("..")
        return label in ("ingest", "ingest_read") and any(first <= s <= (last or first) for s in bad)

    states = collections.Counter(t["state"]["type"] for t in task_runs)
    failed_runs = sum(1 for t in task_runs if read_bad(t["name"]))
    assert (failed_runs > 0) == (failed > 0)
    assert states["COMPLETED"] == len(task_runs) - failed_runs and states["FAILED"] == failed_runs, states


def test_curate_local_folder_rerun_and_resume(stack, ray_local, tmp_path):
    inj, copies = inject_copies(tmp_path / "in", 60)
    root = tmp_path / "corpus"
    cfg = _config(str(root), shared_specs() + [inj], "rel-local")
    manifest = _run(cfg)
    storage = StorageSpec(str(root)).open()
    verify_release(storage, manifest)
    _check_injected(storage, manifest, copies)
    _check_prefect(manifest, shards=4)  # three shared files (each under shard_rows) + the copies
    assert manifest["dedup"]["exact"]["duplicates"] >= len(copies)
    assert manifest["cluster"]["ray_nodes"] >= 1
    assert set(manifest["sources"]) == {"cc_web", "simple_wiki", "hh_rlhf"}
    assert storage.read_json("catalog.json")["latest"] == "rel-local"

    # a rerun of a published release changes no byte and touches no file
    before = file_states(storage)
    again = _run(cfg)
    assert again == manifest
    assert file_states(storage) == before

    # resume after a crash before publish: only the missing shard work is redone, identically
    storage.delete(layout.manifest_path("rel-local"))
    victim = manifest["outputs"]["documents"][1]["path"]
    shard = victim.rsplit("part-", 1)[1].split(".")[0]
    storage.delete(victim)
    storage.delete(layout.marker_path("rel-local", "near_dedup", shard))  # the stage that writes documents
    resumed = _run(cfg)
    verify_release(storage, resumed)
    assert resumed["outputs"] == manifest["outputs"]
    after = file_states(storage)
    recomputed = {rel for rel in after if before.get(rel) != after[rel]}
    allowed = {layout.manifest_path("rel-local"), layout.report_path("rel-local"), layout.urls_path("rel-local"),
               layout.CATALOG, victim, layout.marker_path("rel-local", "near_dedup", shard),
               "state/near_index/segments/rel-local/meta.json"}
    allowed |= {f["path"] for f in manifest["outputs"]["attributes"] + manifest["outputs"]["rejects"]
                if f"part-{shard}." in f["path"] and "/near_dedup/" in f["path"]}
    allowed |= {rel for rel in after if rel.startswith("state/near_index/segments/rel-local/")
                and rel.endswith(f"part-{shard}.parquet")}
    assert recomputed <= allowed, recomputed - allowed
    # the rewritten shard files are byte-identical to the first run's
    for rel in allowed & set(before):
        if rel.endswith(".parquet"):
            assert after[rel][0] == before[rel][0], rel


def test_curate_on_s3(stack, ray_local, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}, skip_instance_cache=True)
    inj, copies = inject_copies(tmp_path / "in", 30, seed=11)
    # one input read from S3 itself, the others from local files
    fs.put_file(str(shared("cc_web_samples/cc_web_samples.parquet")), "refinery/inputs/cc_web/part-0.parquet")
    specs = shared_specs()
    specs[0] = InputSpec(uri="s3://refinery/inputs/cc_web", source="cc_web", columns={"text": "text", "id": "id"})
    root = "s3://refinery/corpus-test"
    manifest = _run(_config(root, specs + [inj], "rel-s3", near_dedup={"verify_threshold": 0.7}))
    storage = StorageSpec(root).open()
    verify_release(storage, manifest)
    _check_injected(storage, manifest, copies)
    _check_prefect(manifest, shards=4)
    assert manifest["inputs"][0]["uri"].startswith("s3://refinery/inputs/cc_web/")
    assert "etag" in manifest["inputs"][0]
    near_m = manifest["dedup"]["near"]
    assert near_m["parameters"]["verify_threshold"] == 0.7
    assert 0 < near_m["edges"] <= near_m["candidate_pairs"]
    assert fs.exists("refinery/corpus-test/releases/rel-s3/manifest.json")
    # credentials appear in no published file
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for rel in ("manifest.json", "report.html", "urls.txt"):
        assert secret not in storage.read_bytes(f"releases/rel-s3/{rel}").decode()
    assert secret not in json.dumps(storage.read_json("catalog.json"))


def test_unreadable_input_is_named_and_the_rest_is_published(stack, ray_local, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = shared("cc_web_samples/cc_web_samples.parquet").read_bytes()
    (folder / "a-good.parquet").write_bytes(good)
    (folder / "b-truncated.parquet").write_bytes(good[: len(good) // 3])
    texts = [{"text": t} for t in pa.parquet.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"))
             .column("text").to_pylist()[:200]]
    write_jsonl(folder / "c-good.jsonl.zst", texts, "zst")
    bad = write_jsonl(folder / "d-corrupt.jsonl.zst", texts, "zst")
    bad.write_bytes(bad.read_bytes()[:200])
    root = tmp_path / "corpus"
    manifest = _run(_config(str(root), [InputSpec(uri=str(folder), source="mixed")], "rel-bad"))
    storage = StorageSpec(str(root)).open()
    verify_release(storage, manifest)
    failed = {f["uri"]: f["error"] for f in manifest["failures"]}
    assert set(failed) == {str(folder / "b-truncated.parquet"), str(folder / "d-corrupt.jsonl.zst")}
    assert "not a readable Parquet file" in failed[str(folder / "b-truncated.parquet")]
    assert "corrupt compressed stream" in failed[str(folder / "d-corrupt.jsonl.zst")]
    assert all(uri in err for uri, err in failed.items())
    assert [i["uri"] for i in manifest["inputs"]] == [str(folder / "a-good.parquet"), str(folder / "c-good.jsonl.zst")]
    assert manifest["funnel"][0]["docs_in"] == 254 + 200
    _check_prefect(manifest, shards=4, failed=2)

    # with fail_fast the release is not published at all
    from flows.curate import ReleaseError

    with pytest.raises(ReleaseError, match="truncated|corrupt"):
        _run(_config(str(root), [InputSpec(uri=str(folder), source="mixed")], "rel-bad-ff",
                     execution={"fail_fast": True}))
    assert not storage.exists(layout.manifest_path("rel-bad-ff"))
