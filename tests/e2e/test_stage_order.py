"""The stage registry and a user-chosen stage order, end to end: real Prefect server, real Ray,
real web pages."""

from __future__ import annotations

import collections

import pyarrow.compute as pc
import pytest

from tasks import registry
from tasks.config import InputSpec, PipelineConfig
from tasks.schema import word_counts
from tasks.storage import StorageSpec
from tests.conftest import shared
from tests.releases import expected_task_runs, prefect_runs, verify_release

pytestmark = pytest.mark.slow

PAGES = "web_pages_scrapinghub/web_pages_scrapinghub.parquet"


def _pages(source: str = "scrapinghub") -> InputSpec:
    return InputSpec(uri=str(shared(PAGES)), source=source, columns={"text": "page_text", "id": "id",
                                                                      "metadata": ["url"]})


def _task_runs(manifest: dict, shards: int) -> None:
    flow_run, task_runs = prefect_runs(manifest["flow_run_id"])
    assert flow_run["state"]["type"] == "COMPLETED"
    by_stage = collections.Counter(t["name"].rsplit("-", 1)[0] for t in task_runs)
    assert by_stage == expected_task_runs(manifest, shards)


def test_refinement_before_near_dedup_on_real_pages(stack, ray_local, tmp_path):
    """The order the issue asks for on real news and blog pages: ProX refines the page text
    before near dedup sees it (near dedup's signature map runs inside the ProX step), quality
    last. The manifest and the funnel record that order, and every stage read what the one
    before it passed on."""
    from flows.curate import run_curate

    order = ["ingest", "exact_dedup", "prox", "near_dedup", "quality"]
    root = tmp_path / "corpus"
    cfg = PipelineConfig(release="web-order", output=str(root), inputs=[_pages()], stages=order,
                         prox={"writer": "learned"})
    assert cfg.prox.enabled and cfg.quality.enabled  # listing a stage runs it
    manifest = run_curate(cfg)
    storage = StorageSpec(str(root)).open()
    verify_release(storage, manifest)  # includes: each funnel line's docs_in is the previous docs_out
    assert manifest["stages"] == order
    assert [st["stage"] for st in manifest["funnel"]] == order
    funnel = {st["stage"]: st for st in manifest["funnel"]}
    assert funnel["ingest"]["docs_out"] == 181
    assert funnel["prox"]["modified"] > 100  # the learned writer cut menus and footers from most pages
    # near dedup's signatures are those of the refined text: made in the prox step, one per document it kept
    prox_markers = [storage.read_json(f) for f in storage.list("state/work/web-order/prox", ".done.json")]
    assert sum(m["near_map"]["docs"] for m in prox_markers) == funnel["prox"]["docs_out"]
    assert not [f for f in storage.list("state/work/web-order/exact_dedup", ".done.json")
                if "near_map" in storage.read_json(f)]
    assert set(manifest["quality"]["languages"]) >= {"en"}
    _task_runs(manifest, 1)


def test_a_stage_registered_outside_the_flow_runs_through_it(stack, ray_local, tmp_path):
    """A toy map stage declared in a test module (tests/e2e/toy_stage.py) and registered at run
    time runs through the real flow, between exact and near dedup: near dedup's map runs inside
    the toy step, the toy's rejects and attributes are published, and the manifest, the funnel
    and the expected task runs follow the registry. No file of the project names the stage."""
    import ray.cloudpickle

    from flows.curate import run_curate
    from tests.e2e import toy_stage

    ray.cloudpickle.register_pickle_by_value(toy_stage)  # Ray workers need not import the tests
    registry.register(toy_stage.STAGE)
    try:
        order = ["ingest", "exact_dedup", toy_stage.NAME, "near_dedup"]
        root = tmp_path / "corpus"
        cfg = PipelineConfig(release="toy", output=str(root), inputs=[_pages()], stages=order)
        manifest = run_curate(cfg)
        storage = StorageSpec(str(root)).open()
        verify_release(storage, manifest)
        assert manifest["stages"] == order
        assert [st["stage"] for st in manifest["funnel"]] == order
        toy = next(st for st in manifest["funnel"] if st["stage"] == toy_stage.NAME)
        assert toy["dropped"] and toy["docs_out"] < toy["docs_in"]
        rejects = [f for f in manifest["outputs"]["rejects"] if f"/rejects/{toy_stage.NAME}/" in f["path"]]
        attrs = [f for f in manifest["outputs"]["attributes"] if f"/attributes/{toy_stage.NAME}/" in f["path"]]
        assert sum(f["rows"] for f in rejects) == toy["docs_in"] - toy["docs_out"] and attrs
        for f in manifest["outputs"]["documents"]:  # nothing short was published
            docs = storage.read_parquet(f["path"])
            assert pc.min(word_counts(docs.column("text"))).as_py() >= toy_stage.MIN_WORDS
        markers = [storage.read_json(f) for f in storage.list(f"state/work/toy/{toy_stage.NAME}", ".done.json")]
        assert sum(m["near_map"]["docs"] for m in markers) == toy["docs_out"]
        _task_runs(manifest, 1)
    finally:
        registry.unregister(toy_stage.NAME)
